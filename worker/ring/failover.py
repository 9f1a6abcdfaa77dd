"""Where a replica goes when one of its hops fails: the head's failover choice.

A failed step tells the head that something downstream did not answer, not
which hop: every hop's own deadline fires at about the same time. So the head
asks each hop of the route it ran (in order, after itself) for a Ping with a
deadline; the first that does not answer is the failed one. The replica then
continues on the route with that hop's standby in its place (``JobRoute.served``
checks the new route against the plan), or not at all if the failed hop has no
standby left.
"""

from __future__ import annotations

import logging
import time

import grpc

from proto.tessera.v1 import worker_pb2 as pb
from worker.planview import JobRoute
from worker.ring.link import Channels

logger = logging.getLogger(__name__)

PING_TIMEOUT_S = 5.0  # a live node answers a Ping within this (capped by hop_timeout_s), seconds


def failed_hop(route: JobRoute, replica: int, channels: Channels, timeout_s: float) -> int | None:
    """Position of the first hop after the head of ``replica`` (as ``route`` runs it) that does not
    answer a Ping within ``timeout_s``; None if every hop answers."""
    for pos, hop in enumerate(route.replicas[replica][1:], start=1):
        try:
            channels.stub(hop.endpoint).Ping(pb.PingRequest(sent_unix_ns=time.time_ns()), timeout=timeout_s)
        except grpc.RpcError as exc:
            logger.warning("job %s replica %s: hop %d (%s at %s) does not answer: %s", route.job_id, replica, pos,
                           hop.node, hop.endpoint, exc.code().name)
            return pos
    return None


def standby_route(route: JobRoute, replica: int, pos: int) -> int | None:
    """servedMask of ``route``'s replica with the hop at ``pos`` replaced by its planned standby;
    None if that hop is itself a standby or its span has none."""
    words = route.plan_words(replica)
    node = route.replicas[replica][pos].node.lower()
    i = next(i for i, (h, _) in enumerate(words) if h.node.lower() == node)
    if words[i][1] or i + 1 >= len(words) or not words[i + 1][1]:
        return None
    return route.mask_of(replica) & ~(1 << i) | 1 << (i + 1)


def next_route(route: JobRoute, replica: int, channels: Channels, timeout_s: float) -> int | None:
    """The servedMask to continue ``replica`` on after a failed step, or None if there is none
    (every hop answers, or the one that does not has no standby)."""
    pos = failed_hop(route, replica, channels, min(timeout_s, PING_TIMEOUT_S))
    return None if pos is None else standby_route(route, replica, pos)
