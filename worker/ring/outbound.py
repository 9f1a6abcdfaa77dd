"""What a stream to the next hop is, whatever it carries: :class:`Outbound`, a stream fed from a queue
with one request in flight, its answer due within a deadline (the one watchdog thread per process
cancels it past that); the errors its refusals become (:func:`refusal`, :class:`PeerTimeout`); and the
checks an answer to a hop message passes (:func:`check_reply`). Both :class:`worker.ring.link.Link`
(one session's ``Forward`` stream) and :class:`worker.ring.batch.BatchStream` (``ForwardBatch``)
are one."""

from __future__ import annotations

import queue
import threading
import time
import weakref
from typing import Any, Protocol

import grpc

from proto.errors import JobInputError, ProtocolError, TesseraError
from proto.tessera.v1 import worker_pb2 as pb
from worker import wire

WATCH_PERIOD_S = 0.1  # how often the watchdog looks for overdue answers, seconds


class PeerTimeout(TesseraError):
    """The next hop did not answer in time (a stalled or vanished peer)."""


class Watched(Protocol):
    def expire_if_overdue(self, now: float) -> None:
        """Cancel the stream if its answer is overdue (``now``: time.monotonic())."""


class _Watchdog:
    """One thread per process that cancels the streams of next hops that stay silent past their due time."""

    def __init__(self):
        self._links: weakref.WeakSet[Watched] = weakref.WeakSet()
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name="link-watchdog", daemon=True).start()

    def watch(self, link: Watched) -> None:
        with self._lock:
            self._links.add(link)

    def _loop(self) -> None:
        while True:
            time.sleep(WATCH_PERIOD_S)
            with self._lock:
                links = list(self._links)
            now = time.monotonic()
            for link in links:
                link.expire_if_overdue(now)


_WATCHDOG: _Watchdog | None = None
_WATCHDOG_LOCK = threading.Lock()


def _watchdog() -> _Watchdog:
    global _WATCHDOG
    with _WATCHDOG_LOCK:
        if _WATCHDOG is None:
            _WATCHDOG = _Watchdog()
        return _WATCHDOG


_END = object()


class Outbound:
    """A request stream to the next hop ``peer``, fed from a queue: one request in flight at a time,
    its answer due within ``timeout_s`` (the watchdog cancels the stream once it is overdue).
    Subclasses open the RPC with :meth:`_requests` and hand its responses to :meth:`_start`."""

    def __init__(self, peer: str, timeout_s: float):
        self.peer, self.timeout_s = peer, timeout_s
        self._q: queue.Queue = queue.Queue()
        self._due: float | None = None  # monotonic time the pending answer is due by; None when none is
        self._timed_out = False
        self._responses: Any = None

    def _start(self, responses: Any) -> None:
        self._responses = responses
        _watchdog().watch(self)

    def _requests(self):
        while True:
            item = self._q.get()
            if item is _END:
                return
            yield item

    def send(self, request: Any) -> Any:
        """Send ``request``; its answer, or the gRPC error or StopIteration that ended the stream
        (:meth:`refused` says what that means for the step)."""
        self._q.put(request)
        self._due = time.monotonic() + self.timeout_s
        try:
            return next(self._responses)
        finally:
            self._due = None

    def refused(self, exc: grpc.RpcError | StopIteration, step: int) -> TesseraError:
        """The error ``step`` hears when :meth:`send` raised ``exc``."""
        if isinstance(exc, StopIteration):
            return ProtocolError(f"next hop {self.peer} closed the stream")
        if self._timed_out:
            return PeerTimeout(f"next hop {self.peer} did not answer step {step} within {self.timeout_s:g} s")
        return refusal(exc.code(), exc.details() or "", self.peer, step)

    def expire_if_overdue(self, now: float) -> None:
        """Cancel the stream if its answer is overdue (called by the watchdog)."""
        due = self._due
        if due is not None and now > due:
            self._timed_out = True
            self._responses.cancel()

    def _end(self) -> None:
        """No more requests: the RPC's request stream ends."""
        self._q.put(_END)


def refusal(code: grpc.StatusCode, details: str, peer: str, step: int) -> TesseraError:
    """The error a session's step hears when the next hop refused it with ``code``."""
    details = wire.safe(details, 300)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PeerTimeout(f"next hop {peer} did not finish before the job's deadline (step {step})")
    if code == grpc.StatusCode.INVALID_ARGUMENT:  # deterministic: the job's input can never run there
        return JobInputError(f"next hop {peer} refused step {step} as invalid: {details}")
    return ProtocolError(f"next hop {peer} refused step {step}: {code.name} {details}")


def check_reply(resp: pb.HopMessage, msg: pb.HopMessage, peer: str, session: bytes) -> pb.HopMessage:
    """``resp`` if it is a bounded answer to ``msg`` of the session ``session`` (upstream, same job,
    replica, step and kind) that reports no failure; ProtocolError otherwise. Its signature is the
    caller's to check."""
    wire.check_answer(resp)
    if not resp.upstream or resp.job_id != msg.job_id or resp.replica != msg.replica \
            or resp.step != msg.step or resp.kind != msg.kind or resp.session != session:
        raise ProtocolError(f"next hop {peer} answered step {resp.step} kind {resp.kind} "
                            f"to step {msg.step} kind {msg.kind} of another session or order")
    if resp.error:
        raise ProtocolError(f"next hop {peer} failed: {wire.safe(resp.error, 200)}")
    return resp
