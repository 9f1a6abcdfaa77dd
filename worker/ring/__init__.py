"""Ring generation: the head drives (``run_replica``), every hop relays
(``HopRuntime``), the tail samples and the token flows back to the head. Each
node's part of a step, head or hop, is a :class:`Pipeline`."""

from worker.ring.head import run_replica
from worker.ring.hop import HopRuntime, Stream
from worker.ring.link import Channels, Link
from worker.ring.pipeline import OnOutput, Pipeline, tail_choose

__all__ = ["run_replica", "HopRuntime", "Stream", "OnOutput", "Pipeline", "tail_choose", "Channels", "Link"]
