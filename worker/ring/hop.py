"""The worker side of the ring: handle one hop message of a session.

``HopRuntime.handle`` is the backend of the gRPC servicer. Every request is
first bounded field by field (:mod:`worker.wire`). An OPEN has its signer
recovered before the plan is looked up, is accepted only from the planned
predecessor on the route the OPEN names (primaries, or a standby in place of a
failed primary: ``JobRoute.served``), fresh and with an unseen session nonce, and
binds one session to the stream it came on. A STEP must belong to that session and come in order;
its activations must match the job's plan (codec, block, batch 1, width,
context length) and memory for it is reserved before the stage runs. The step
itself is the session's :class:`worker.ring.pipeline.Pipeline`, the code the
head runs too: a small step's signature is checked while the stage runs, a
large one's before, and either is joined before anything leaves the node.

Decode steps of sessions that ran in one forward upstream may come as one
``ForwardBatch`` message instead (``HopRuntime.handle_batch``, see
:mod:`worker.ring.batch`): each is bounded and its signature checked first, then
the batch is decoded, run and passed on together on one thread, with the same
checks per message as on its own stream, and answered or refused per message.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

import torch

from proto.errors import CodecError, JobInputError, ProtocolError, TesseraError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId
from worker import wire
from worker.config import WorkerConfig
from worker.limits import ModelLimits
from worker.planview import JobRoute, PlanView
from worker.ring.link import Channels, encoded, message, payload_of
from worker.ring.pipeline import OnOutput, Pipeline, forward_many
from worker.sessions import OpenGuard, Session, SessionTable
from worker.signing import PendingCheck, Signer, recover_sender, verify
from worker.stage import Activation, Stage, tensors, to_stage
from worker.stagepool import Loader, StagePool
from worker.verify.signed import SignedReceipt

logger = logging.getLogger(__name__)

ReceiptsSource = Callable[[int, int], Sequence[SignedReceipt]]  # (job, replica) -> its receipts, or TesseraError

STEP_WORK = 8  # a step's transient memory, in copies of its input (decoded input, output, MLP work)


class Stream:
    """What one Forward stream carries: at most one session (one stream per session)."""

    __slots__ = ("session",)

    def __init__(self):
        self.session: Session | None = None


class HopRuntime:
    """Executes the hops this worker is planned for."""

    def __init__(self, config: WorkerConfig, stage: Stage, planview: PlanView, signer: Signer,
                 on_output: OnOutput | None = None, channels: Channels | None = None,
                 loader: Loader | None = None, limits: ModelLimits | None = None):
        self.config, self.stage, self.planview, self.signer = config, stage, planview, signer
        self.limits = limits or ModelLimits()
        self.stages = StagePool(stage, loader)  # the loaded span and planned sub-spans of it
        self.on_output = on_output
        self.channels = channels or Channels(config.max_message_bytes)
        self.sessions = SessionTable(config.session_ttl_s, config.session_max_bytes, config.max_sessions)
        self.opens = OpenGuard(config.open_window_s)
        self.tokens_per_second = 0.0  # moving average over decode steps
        self._direct = Stream()  # the stream of direct calls (tests)
        self.receipts: ReceiptsSource | None = None  # where committed replicas' receipts are kept (the daemon)
        self.batched_steps = 0  # STEPs answered that came in batches (handle_batch), count

    # ------------------------------------------------------------------ entry
    def handle(self, msg: pb.HopMessage, stream: Stream | None = None) -> pb.HopMessage:
        """Answer one request that came on ``stream`` (direct calls share one); raises TesseraError
        families on refusal. A refused STEP or CLOSE ends the stream's session."""
        stream = self._direct if stream is None else stream
        job = wire.check_request(msg, self.config.max_payload_bytes)
        if msg.kind == pb.KIND_OPEN:
            return self._open(msg, job, stream)
        s = stream.session
        if s is None or s.key != (job, msg.replica) or msg.session != s.nonce:
            raise ProtocolError(f"job {job} replica {msg.replica} has no session opened on this stream")
        self.sessions.begin(s)
        held = None
        try:
            if msg.kind == pb.KIND_STEP:
                answer = self._step(msg, s)
                held = s.pipe.stage.cache_bytes(s.pipe.cache)
            else:
                answer = self._close(msg, s)
                stream.session = None
            return answer
        except BaseException:
            self.sessions.close(s)
            stream.session = None
            raise
        finally:
            self.sessions.end(s, held)

    def receipts_of(self, job: int, replica: int) -> Sequence[SignedReceipt]:
        """The signed receipts of a replica this node committed, once the job revealed (else refused)."""
        if self.receipts is None:
            raise ProtocolError("this worker follows no chain, so it commits no replica and keeps no receipts")
        return self.receipts(job, replica)

    def live(self, stream: Stream) -> bool:
        """Whether ``stream`` carries a session that is still open (not expired, replaced or closed)."""
        return stream.session is not None and self.sessions.is_current(stream.session)

    def end_stream(self, stream: Stream) -> None:
        """The stream ended: close its session, if it is still the one open for its key."""
        if stream.session is not None:
            self.sessions.close(stream.session)
            stream.session = None

    def _answer(self, msg: pb.HopMessage, pos: int, route: JobRoute, ids=(), output: bytes = b"") -> pb.HopMessage:
        return self.signer.sign(message(int(msg.job_id), msg.replica, pos, msg.step, msg.kind, upstream=True,
                                        ids=ids, output=output, session=msg.session), route.domain)

    # ------------------------------------------------------------------ kinds
    def _open(self, msg: pb.HopMessage, job: int, stream: Stream) -> pb.HopMessage:
        if stream.session is not None:
            raise ProtocolError("this stream already carries a session; open one stream per session")
        self.opens.check(msg.session, msg.sent_unix_ms)  # a stale or replayed OPEN costs no cryptography
        signer = recover_sender(msg, self.planview.domain)  # before any lookup the message would cost
        route = self.planview.route(JobId(job), msg.sender).served(msg.replica, msg.route)  # primary or standby
        pos = route.position(msg.replica, self.signer.address)
        if pos == 0 or msg.hop != pos - 1:
            raise ProtocolError(f"this node is hop {pos} of replica {msg.replica}; it accepts only hop "
                                f"{pos - 1}, not hop {msg.hop}")
        prev = route.hop(msg.replica, pos - 1).node
        if signer != bytes.fromhex(prev[2:]):
            raise ProtocolError(f"message from {msg.sender}, but the plan names {prev} at hop {msg.hop}")
        self.opens.admit(msg.session, msg.sent_unix_ms)
        hop = route.hop(msg.replica, pos)
        stage = self.stages.get(hop.start, hop.end)
        expires = time.monotonic() + (route.deadline - time.time()) if route.deadline is not None else float("inf")
        s = self.sessions.open((job, msg.replica), msg.session, expires)
        try:
            s.pipe = Pipeline(route, msg.replica, pos, stage, self.signer, self.config, self.channels,
                              on_output=self.on_output)
            s.pipe.open()
        except BaseException:
            self.sessions.close(s)
            raise
        stream.session = s
        logger.info("opened job %s replica %s at hop %d [%d, %d) for %s (route %#x)", job, msg.replica, pos,
                    hop.start, hop.end, msg.sender, msg.route)
        return self._answer(msg, pos, route)

    def _step(self, msg: pb.HopMessage, s: Session) -> pb.HopMessage:
        t_in = time.perf_counter()
        pipe = s.pipe
        times = pipe.times
        check = PendingCheck(msg, pipe.route.hop(pipe.replica, pipe.pos - 1).node, pipe.route.domain)
        try:
            if not pipe.overlaps(wire.rows(msg.payload.shape)):
                check.result()  # a large input is verified before it costs a decode or a prefill
            x = self._before(msg, s)
            before = pipe.compute_s
            y = pipe.forward(to_stage(x, pipe.stage.device, pipe.stage.dtype), msg.step, check)
        except BaseException:
            check.result()  # a forged message is refused as forged, whatever else is wrong with it
            raise
        self._measure(x, pipe.compute_s - before)
        s.next_step += 1
        ids, output = pipe.send(y, msg.step)
        t_answer = time.perf_counter()
        answer = self._answer(msg, pipe.pos, pipe.route, ids=ids, output=output)
        t_out = time.perf_counter()
        times.add("sign", t_out - t_answer)
        times.end_step(msg.step, t_out - t_in)
        s.busy_s += t_out - t_in
        return answer

    # ------------------------------------------------------------------ batches
    def handle_batch(self, msgs: Sequence[pb.HopMessage]) -> list[pb.HopMessage | BaseException]:
        """Answer a ``ForwardBatch`` request: STEPs of sessions opened on Forward streams to this node,
        run as one batch (worker.ring.batch). Per message: its signed answer, or the error that refused
        it. A message is first bounded and its signature checked against its session's planned
        predecessor: one that fails that is refused and its session left alone; after that, a refusal
        ends the session, as on its own stream. MessageError if the batch has more messages than this
        node can have sessions (each must be a different open session); the stage's scheduler cuts
        the forwards at ``max_batch``, whatever the sender's own limit."""
        cap = self.config.max_sessions
        if len(msgs) > cap:
            raise wire.MessageError(f"a batch of {len(msgs)} steps; this node holds at most {cap} sessions "
                                    "(max_sessions), each message must be a different one")
        t_in = time.perf_counter()
        out: list[pb.HopMessage | BaseException | None] = [None] * len(msgs)
        begun: list[Session] = []
        ready: list[tuple[int, Session, Activation]] = []  # (index, session, decoded input)
        seen: set[int] = set()
        try:
            for i, msg in enumerate(msgs):
                try:
                    s = self._batched_session(msg, seen)
                    self.sessions.begin(s)
                except TesseraError as exc:
                    out[i] = exc
                    continue
                begun.append(s)
                try:
                    ready.append((i, s, self._before(msg, s)))
                except BaseException as exc:  # noqa: BLE001 - this session's refusal
                    out[i] = self._fail(s, exc)
            ys = forward_many([s.pipe for _, s, _ in ready], [x for _, _, x in ready])
            sends: dict[tuple[str, str], list[tuple[int, Session, pb.HopMessage]]] = {}
            for (i, s, x), y in zip(ready, ys):
                msg, pipe = msgs[i], s.pipe
                try:
                    if isinstance(y, BaseException):
                        raise y
                    self._measure(x, pipe.times.cur.get("forward", 0.0))
                    s.next_step += 1
                    y = pipe.record(y, msg.step)
                    if pipe.link is None:
                        ids, output = pipe.choose(y, msg.step)
                        pipe.seal()
                        out[i] = self._answer(msg, pipe.pos, pipe.route, ids=ids, output=output)
                    else:
                        sends.setdefault((pipe.endpoint, pipe.link.peer), []).append((i, s, pipe.outgoing(y, msg.step)))
                except BaseException as exc:  # noqa: BLE001
                    out[i] = self._fail(s, exc)
            self._exchange_all(msgs, sends, out)
            self.batched_steps += sum(isinstance(a, pb.HopMessage) for a in out)
        finally:
            t_out = time.perf_counter()
            for s in begun:
                pipe = s.pipe
                if pipe is not None:
                    pipe.times.end_step(s.next_step - 1, t_out - t_in)
                    s.busy_s += t_out - t_in
                if s.touch is not None:
                    s.touch()
                self.sessions.end(s, pipe.stage.cache_bytes(pipe.cache) if pipe is not None and pipe.cache is not None
                                  else None)
        return out

    def _batched_session(self, msg: pb.HopMessage, seen: set[int]) -> Session:
        """The session a batched message belongs to, once its bounds and signature are checked."""
        job = wire.check_request(msg, self.config.max_payload_bytes)
        if msg.kind != pb.KIND_STEP:
            raise ProtocolError(f"a batch carries STEP messages only, not kind {msg.kind}; OPEN and CLOSE go on "
                                "the session's own Forward stream")
        s = self.sessions.find((job, msg.replica), msg.session)
        if s is None or s.pipe is None:
            raise ProtocolError(f"job {job} replica {msg.replica} has no session open here with that nonce")
        if id(s) in seen:
            raise ProtocolError(f"the batch carries two steps of job {job} replica {msg.replica}")
        pipe = s.pipe
        verify(msg, pipe.route.hop(pipe.replica, pipe.pos - 1).node, pipe.route.domain)
        seen.add(id(s))
        return s

    def _fail(self, s: Session, exc: BaseException) -> BaseException:
        """``s``'s message was refused: its session ends, as on its own stream."""
        self.sessions.close(s)
        return exc

    def _exchange_all(self, msgs: Sequence[pb.HopMessage],
                      sends: dict[tuple[str, str], list[tuple[int, Session, pb.HopMessage]]],
                      out: list) -> None:
        """Send each next hop its messages as one batch (several next hops at once), then answer."""
        def one(key, items):
            t0 = time.perf_counter()
            answers = self.channels.coalescer(*key).link.exchange([m for _, _, m in items],
                                                                  self.config.hop_timeout_s)
            for n, (i, s, m) in enumerate(items):
                try:
                    a = answers[n] if answers is not None else s.pipe.link.exchange(m)  # all batch streams busy
                    if isinstance(a, BaseException):
                        raise a
                    s.pipe.times.add("next_hop", time.perf_counter() - t0)
                    out[i] = self._answer(msgs[i], s.pipe.pos, s.pipe.route, *s.pipe.accept(a))
                    s.pipe.seal()
                except BaseException as exc:  # noqa: BLE001
                    out[i] = self._fail(s, exc)

        groups = list(sends.items())
        threads = [threading.Thread(target=one, args=g, name="batch-send", daemon=True) for g in groups[1:]]
        for t in threads:
            t.start()
        if groups:
            one(*groups[0])
        for t in threads:
            t.join()

    def _close(self, msg: pb.HopMessage, s: Session) -> pb.HopMessage:
        pipe = s.pipe
        PendingCheck(msg, pipe.route.hop(pipe.replica, pipe.pos - 1).node, pipe.route.domain).result()
        if msg.step != s.next_step:
            raise ProtocolError(f"CLOSE of job {pipe.job} names step {msg.step}; {s.next_step} steps ran")
        pipe.finish(msg.step, [SignedReceipt.from_pb(m) for m in msg.receipts])
        logger.info("closed job %s replica %s at hop %d after %d steps; ms per decode step: %s", pipe.job,
                    pipe.replica, pipe.pos, s.next_step, pipe.times.summary())
        self.sessions.close(s)
        return self._answer(msg, pipe.pos, pipe.route)

    def _before(self, msg: pb.HopMessage, s: Session) -> Activation:
        """What a STEP does before its forward: order and plan checks, decode, receipt, memory."""
        pipe, times = s.pipe, s.pipe.times
        if msg.step != s.next_step:
            raise ProtocolError(f"expected step {s.next_step} of job {pipe.job}, got step {msg.step} "
                                "(replayed or out of order)")
        self._admit(pipe, msg)
        t0 = time.perf_counter()
        x = payload_of(msg, self.config.max_payload_bytes)
        t1 = time.perf_counter()
        pipe.note_input(msg.step, encoded(msg.payload), x)
        times.add("decode", t1 - t0)
        times.add("receipt", time.perf_counter() - t1)
        self.sessions.reserve(s, s.held_bytes + self._step_bytes(pipe, x))
        return x

    # ------------------------------------------------------------------ checks
    def _admit(self, pipe: Pipeline, msg: pb.HopMessage) -> None:
        """Refuse activations the job's plan rules out, before they are decoded or run."""
        route, p, where = pipe.route, msg.payload, f"job {pipe.job} step {msg.step}"
        steps = route.steps
        if msg.step >= steps:
            raise ProtocolError(f"{where} is past the job's last step {steps - 1}")
        for t in (p, *msg.extras):
            if t.codec != route.params.codec or t.block != route.params.block:
                raise CodecError(f"{where}: activations in codec {t.codec} block {t.block}; the job's plan names "
                                 f"codec {route.params.codec} block {route.params.block}")
        if route.kind != "causal-lm":
            return
        if msg.extras:
            raise CodecError(f"{where}: {len(msg.extras)} extra activations; a language model's hops pass one tensor")
        shape = tuple(p.shape)
        hidden = self.limits.hidden
        if len(shape) != 3 or shape[0] != 1 or (hidden is not None and shape[2] != hidden):
            raise CodecError(f"{where}: activations of shape {shape}; this model's hops pass (1, tokens, "
                             f"{hidden or 'hidden'}) (batch 1)")
        context, have = self.limits.context, pipe.positions
        need = have + shape[1] + (route.params.max_tokens - 1 - msg.step if have == 0 else 0)
        if context is not None and need > context:
            raise JobInputError(f"{where}: {have} positions held, {shape[1]} more sent and "
                                f"{need - have - shape[1]} still to generate pass the model's context of "
                                f"{context} positions")

    def _step_bytes(self, pipe: Pipeline, x: Activation) -> int:
        """Memory a step of ``x`` needs: the cache it adds (a decoder keeps at most a key and a value
        as wide as its input per block and position) and its transient work."""
        elem = torch.empty((), dtype=pipe.stage.dtype).element_size()
        per_copy = sum(t.numel() for t in tensors(x)) * elem
        blocks = pipe.stage.spec.end - pipe.stage.spec.start
        return per_copy * (STEP_WORK + (2 * blocks if pipe.route.kind == "causal-lm" else 0))

    def _measure(self, x: Activation, seconds: float) -> None:
        x = tensors(x)[0]
        if x.dim() == 3 and x.shape[1] == 1 and seconds > 0:
            rate = 1.0 / seconds
            self.tokens_per_second = rate if not self.tokens_per_second else 0.9 * self.tokens_per_second + 0.1 * rate

    def close(self) -> None:
        self.sessions.close_all()
        self.channels.close()
