"""Ring generation: the head drives (``run_replica``), every hop relays
(``HopRuntime``), the tail samples and the token flows back to the head."""

from worker.ring.head import run_replica
from worker.ring.hop import HopRuntime, OnOutput, tail_choose
from worker.ring.link import Channels, Link

__all__ = ["run_replica", "HopRuntime", "OnOutput", "tail_choose", "Channels", "Link"]
