"""Several sessions' steps in one message to the next hop (``ForwardBatch``).

Each session still opens and closes on its own ``Forward`` stream
(:class:`worker.ring.link.Link`). When a stage's forward ran several sessions'
steps as one batch (decode steps, or a chunk of prompts: ``prompt_chunk_tokens``),
the messages those sessions send on to the same next
hop travel as one :class:`HopBatch` and their answers come back as one: the
next hop decodes, checks and runs them as a batch on one thread
(:meth:`worker.ring.hop.HopRuntime.handle_batch`), instead of one handler thread
per session waking in turn, and one gRPC message crosses each hop per batch
instead of one per session. Every message inside is signed and bound to its
session exactly as on its own stream, and answered or refused on its own.

* :class:`BatchLink`: the ``ForwardBatch`` streams of this process to one
  endpoint. A stream carries one batch at a time (request, then its answer);
  idle ones are reused, and a batch finds one free or opens one, at most
  :data:`MAX_STREAMS` at once (past that the caller sends on the sessions' own
  streams). Every answer is awaited at most the hop timeout.
* :class:`Coalescer`: the sessions of one forward bound for one endpoint each
  hand in, from their own thread (the head's, one per job), how to build their
  message; the last one in builds them all on its thread (receipt, encode,
  sign: one thread instead of every session's taking turns for the GIL
  around each small torch op) and sends them. The first waits at most
  :data:`COALESCE_S` for the rest, then builds and sends what has come.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from proto.errors import ProtocolError, TesseraError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker import wire
from worker.ring.outbound import Outbound, PeerTimeout, check_reply, refusal

MAX_STREAMS = 8  # ForwardBatch streams open to one endpoint at once (batches in flight to it)
IDLE_S = 4.0  # an idle stream quiet this long is closed instead of reused, seconds (a node ends batch
# streams quiet for WorkerConfig.stream_idle_s, 10 s by default)
COALESCE_S = 0.02  # the first message of a forward's batch waits this long at most for the rest, seconds


class BatchStream(Outbound):
    """One ``ForwardBatch`` stream: one batch in flight at a time, each answered within ``timeout_s``."""

    def __init__(self, stub: pb_grpc.WorkerServiceStub, peer: str, timeout_s: float):
        super().__init__(peer, timeout_s)
        self.used = time.monotonic()
        self._start(stub.ForwardBatch(self._requests()))

    def exchange(self, batch: pb.HopBatch) -> pb.HopBatch:
        try:
            return self.send(batch)
        finally:
            self.used = time.monotonic()

    def close(self) -> None:
        self._end()
        self._responses.cancel()


_CODES = {c.value[0]: c for c in grpc.StatusCode}


class BatchLink:
    """This process's ``ForwardBatch`` streams to one endpoint (``peer``: the node there, for messages)."""

    def __init__(self, stub: pb_grpc.WorkerServiceStub, peer: str):
        self.stub, self.peer = stub, peer
        self._lock = threading.Lock()
        self._idle: list[BatchStream] = []
        self._open = 0  # streams open (idle or carrying a batch)
        self.unsupported = False  # the node answered UNIMPLEMENTED (an older version): its sessions' own streams

    def exchange(self, msgs: Sequence[pb.HopMessage], timeout_s: float) -> list[pb.HopMessage | TesseraError] | None:
        """Send ``msgs`` (signed STEP requests) as one batch; per message, its answer (checked like a
        :class:`Link`'s, signature aside: the caller checks it) or the error its session hears. None
        when :data:`MAX_STREAMS` batches are in flight already, or the node does not take batches (it
        answered UNIMPLEMENTED: nothing of the batch ran): send them on their own streams."""
        stream = None if self.unsupported else self._take(timeout_s)
        if stream is None:
            return None
        ok = False
        try:
            answer = stream.exchange(pb.HopBatch(messages=list(msgs)))
        except (grpc.RpcError, StopIteration) as exc:
            if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.unsupported = True
                return None
            err = stream.refused(exc, msgs[0].step)
            return [err] * len(msgs)
        else:
            out = self._answers(msgs, answer)
            ok = all(not isinstance(a, TesseraError) for a in out)
            return out
        finally:
            self._give_back(stream, ok)

    def _answers(self, msgs: Sequence[pb.HopMessage], answer: pb.HopBatch) -> list[pb.HopMessage | TesseraError]:
        if len(answer.messages) != len(msgs) or len(answer.codes) not in (0, len(msgs)):
            err = ProtocolError(f"next hop {self.peer} answered a batch of {len(msgs)} steps with "
                                f"{len(answer.messages)} answers and {len(answer.codes)} codes")
            return [err] * len(msgs)
        codes = list(answer.codes) or [0] * len(msgs)
        out: list[pb.HopMessage | TesseraError] = []
        for msg, resp, code in zip(msgs, answer.messages, codes):
            try:
                if code:
                    status = _CODES.get(code)
                    if status is None or status == grpc.StatusCode.OK:
                        raise ProtocolError(f"next hop {self.peer} refused step {msg.step} with an unknown "
                                            f"status code {code}")
                    if len(resp.error) > wire.MAX_ERROR_CHARS:
                        raise wire.MessageError(f"refusal of step {msg.step} is too long")
                    out.append(refusal(status, resp.error, self.peer, msg.step))
                    continue
                out.append(check_reply(resp, msg, self.peer, msg.session))
            except TesseraError as exc:
                out.append(exc)
        return out

    def _take(self, timeout_s: float) -> BatchStream | None:
        now, stale = time.monotonic(), []
        with self._lock:
            while self._idle:
                s = self._idle.pop()
                if now - s.used < IDLE_S:
                    s.timeout_s = timeout_s
                    return s
                stale.append(s)
                self._open -= 1
            full = self._open >= MAX_STREAMS
            if not full:
                self._open += 1
        for s in stale:
            s.close()
        if full:
            return None
        try:
            return BatchStream(self.stub, self.peer, timeout_s)
        except BaseException:
            with self._lock:
                self._open -= 1
            raise

    def _give_back(self, stream: BatchStream, ok: bool) -> None:
        with self._lock:
            if ok:
                self._idle.append(stream)
                return
            self._open -= 1
        stream.close()  # a stream that saw a refusal or an error is not trusted with the next batch

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for s in idle:
            s.close()


class _Slot:
    __slots__ = ("answer", "build", "done", "msg", "work_s")

    def __init__(self, build: Callable[[], pb.HopMessage]):
        self.build = build
        self.msg: pb.HopMessage | None = None
        self.done = threading.Event()
        self.answer: pb.HopMessage | BaseException | None = None
        self.work_s = 0.0  # how long building the message took (on the sending thread), seconds


class Coalescer:
    """Gathers, per forward, the messages its sessions send to :attr:`link`'s endpoint into one batch."""

    def __init__(self, link: BatchLink):
        self.link = link
        self._lock = threading.Lock()
        self._groups: dict[Any, list[_Slot]] = {}

    def exchange_built(self, key: Any, expected: int, build: Callable[[], pb.HopMessage],
                       timeout_s: float) -> tuple[pb.HopMessage | None, pb.HopMessage, float]:
        """Send the message ``build()`` makes, one of ``expected`` messages of the forward ``key``, in one
        batch with the others; the thread that sends the batch (this one or another member's) calls every
        member's ``build``. Returns (its answer, signature not checked, or None if it must go on its
        session's own stream; the message; seconds ``build`` took). What ``build`` raises is raised here,
        in its own session's thread; the others go on."""
        slot = _Slot(build)
        with self._lock:
            group = self._groups.setdefault(key, [])
            group.append(slot)
            full = len(group) >= expected
            if full:
                del self._groups[key]
        if not full and not slot.done.wait(COALESCE_S):
            with self._lock:  # the rest are late: send what came (unless the last one in just took it)
                full = self._groups.get(key) is group
                if full:
                    del self._groups[key]
        if full:
            self._send(group, timeout_s)
        elif not slot.done.wait(timeout_s + COALESCE_S):
            raise PeerTimeout(f"next hop {self.link.peer} did not answer a step within {timeout_s:g} s")
        if isinstance(slot.answer, BaseException):
            raise slot.answer
        return slot.answer, slot.msg, slot.work_s

    def _send(self, group: list[_Slot], timeout_s: float) -> None:
        built: list[_Slot] = []
        for s in group:
            t0 = time.perf_counter()
            try:
                s.msg = s.build()
            except BaseException as exc:  # noqa: BLE001 - its own session hears of it
                s.answer = exc
                s.done.set()
                continue
            finally:
                s.work_s = time.perf_counter() - t0
            built.append(s)
        if not built:
            return
        try:
            answers = self.link.exchange([s.msg for s in built], timeout_s)
        except BaseException as exc:  # noqa: BLE001 - every member hears of it
            answers = [exc if isinstance(exc, TesseraError) else ProtocolError(f"batch send failed: {exc}")] \
                * len(built)
        for s, a in zip(built, answers or [None] * len(built)):
            s.answer = a
            s.done.set()
