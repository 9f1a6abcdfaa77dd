"""Follow a job's tokens as its heads produce them (``tessera.v1.StreamService``).

:func:`stream_tokens` subscribes to the head of every replica of a plan, checks
each event's signature against the head the plan names, and yields the ids of
the first replica to produce one (switching only if that replica's run fails).
The ids are a preview signed by one node: the job's output is what the chain
settles by majority (:func:`tessera.requester.follow`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from proto.errors import ProtocolError
from proto.tessera.v1 import stream_pb2 as spb
from proto.tessera.v1 import stream_pb2_grpc as spb_grpc
from proto.types import Plan
from worker.stream import recover

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenChunk:
    """New ids of the replica being shown, in order."""

    replica: int
    node: str  # the head that signed them
    ids: tuple[int, ...]
    restart: bool = False  # the head retried the replica: what was shown before is void


def _follow(endpoint: str, node: str, job_id: int, replica: int, wait_s: float, out: queue.Queue,
            cancel: threading.Event) -> None:
    """Put every verified event of one replica on ``out``; a None marks the end of this subscription."""
    channel = grpc.insecure_channel(endpoint)
    try:
        stub = spb_grpc.StreamServiceStub(channel)
        call = stub.Subscribe(spb.SubscribeRequest(job_id=str(job_id), replica=replica, wait_ms=int(wait_s * 1000)),
                              timeout=wait_s + 5)
        for ev in call:
            if cancel.is_set():
                call.cancel()
                break
            if recover(ev) != node or int(ev.job_id) != job_id or ev.replica != replica:
                raise ProtocolError(f"token event from {ev.sender} for job {ev.job_id} replica {ev.replica}; "
                                    f"expected {node} for job {job_id} replica {replica}")
            out.put(ev)
    except (grpc.RpcError, ProtocolError) as exc:
        if not cancel.is_set():
            logger.info("token stream of job %s replica %s from %s ended: %s", job_id, replica, endpoint,
                        exc.details() if isinstance(exc, grpc.RpcError) else exc)
    finally:
        channel.close()
        out.put((replica, None))


def stream_tokens(plan: Plan, job_id: int, endpoints: dict[str, str], wait_s: float = 600.0,
                  cancel: threading.Event | None = None) -> Iterator[TokenChunk]:
    """Ids of ``job_id`` as a replica's head produces them. ``endpoints``: node -> host:port
    (from the NodeRegistry). Ends when the replica shown is done, every subscription ended,
    ``wait_s`` passed or ``cancel`` was set."""
    cancel = cancel or threading.Event()
    out: queue.Queue = queue.Queue(maxsize=10_000)
    heads = {r: rep.hops[0].node for r, rep in enumerate(plan.replicas)}
    live = 0
    for r, node in heads.items():
        ep = endpoints.get(node) or endpoints.get(node.lower())
        if ep:
            live += 1
            threading.Thread(target=_follow, args=(ep, node, job_id, r, wait_s, out, cancel), daemon=True,
                             name=f"tokens-{job_id}-{r}").start()
    ids: dict[int, list[int]] = {r: [] for r in heads}  # each replica's ids of its current attempt
    attempt: dict[int, int] = {r: 0 for r in heads}
    done: set[int] = set()
    ended: set[int] = set()  # subscriptions over
    shown: int | None = None  # the replica whose ids are shown
    got = 0  # ids of ``shown`` yielded so far
    t_end = time.monotonic() + wait_s
    try:
        while len(ended) < live and time.monotonic() < t_end and not cancel.is_set():
            try:
                item = out.get(timeout=min(1.0, max(t_end - time.monotonic(), 0.01)))
            except queue.Empty:
                continue
            restart = False
            if isinstance(item, tuple):  # (replica, None): a subscription ended
                ended.add(item[0])
                if item[0] == shown and shown not in done:
                    shown = None
            else:
                ev: spb.TokenEvent = item
                r = ev.replica
                if ev.attempt != attempt[r]:
                    attempt[r], ids[r] = ev.attempt, []
                    restart = r == shown and got > 0
                    if restart:
                        got = 0
                if ev.done and not ev.error:
                    done.add(r)
                if ev.index == len(ids[r]):
                    ids[r].extend(ev.ids)
            if shown is None:
                alive = [r for r in heads if r not in ended or r in done]
                best = max(alive, key=lambda r: len(ids[r]), default=None)
                if best is not None and (ids[best] or best in done):
                    shown, restart, got = best, got > 0, 0
            if shown is None:
                continue
            new = tuple(ids[shown][got:])
            if new or restart:
                got += len(new)
                yield TokenChunk(shown, heads[shown], new, restart)
            if shown in done:
                return
    finally:
        cancel.set()
