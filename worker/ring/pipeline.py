"""This node's part of one replica, step by step: the same code on the head and on every hop.

A step is verify -> forward -> encode + sign -> exchange. The signature check of
the message a step's input came from runs on the verifier thread while the stage
computes (:class:`worker.signing.PendingCheck`) and is joined before
:meth:`Pipeline.forward` returns, so nothing computed from an unverified message
leaves the node. The overlap policy says when the next hop's answer is checked:

* ``defer_answer_check=True`` (the head): the answer only feeds the head's next
  step, so its check runs while that step computes; :meth:`Pipeline.finish`
  joins the last one before the caller may return the ids.
* ``False`` (a hop): the hop relays the answer upstream at once, so it is checked
  on arrival; the check of the incoming step is the caller's (``forward(check=)``).

Each hop of a language job also keeps its receipt (:mod:`worker.verify.receipt`):
what :meth:`Pipeline.send` passes on is fingerprinted as it leaves, chunk by
chunk as the tail's tokens come back. At the end the CLOSE carries the signed
receipts of every hop before the receiver down the ring; each receiver first
holds its predecessor's receipt against the payloads that predecessor really sent
(:class:`worker.verify.received.ReceivedCheck`, so no hop can be framed by the one
before it), and the tail checks them all against the route and its output and
hands output and receipts to ``on_output`` (the node commits their root).

The overlap itself is kept for small inputs only (:data:`OVERLAP_MAX_ROWS`, one-token
decode steps): a larger input (a prompt) is verified before the stage runs, so a
forged one costs a signature check, not a prefill.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import torch

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import embedding_words, encode_output, output_hash
from worker import codec
from worker.config import WorkerConfig
from worker.planview import JobRoute
from worker.ring.link import Channels, Link, corrupt, encode_activation, message
from worker.sampling import argmax_classes, sample
from worker.scheduler import scheduler_for
from worker.signing import PendingCheck, Signer, verify
from worker.stage import Activation, Stage, tensors, to_stage
from worker.steptimes import StepTimes
from worker.verify.receipt import ReceiptRecorder
from worker.verify.received import ReceivedCheck
from worker.verify.signed import SignedReceipt, check_replica, sign
from worker.wire import rows

logger = logging.getLogger(__name__)

OnOutput = Callable[[int, int, bytes, int, tuple[SignedReceipt, ...]], None]  # (job, replica, output, servedMask, receipts)
OVERLAP_MAX_ROWS = 4  # a step's signature check overlaps its compute only up to this many rows (tokens)


class Pipeline:
    """Hop ``pos`` of ``replica`` of ``route`` on this node: the stage and its cache, a stream
    to the next hop (over ``channels``; none on the tail), on the tail the ids chosen so far, and its
    receipt in the making. ``route`` is the one the session runs (``JobRoute.served``: primaries, or
    standbys after a failover); its servedMask travels in the OPEN and reaches the tail's ``on_output``."""

    __slots__ = ("route", "job", "replica", "pos", "stage", "cache", "runner", "signer", "config", "link", "last",
                 "defer", "overlap_rows", "pending", "on_output", "tokens", "finished", "positions", "compute_s",
                 "wait_s", "mask", "closed", "recorder", "received", "output", "times", "channels", "endpoint",
                 "batch")

    def __init__(self, route: JobRoute, replica: int, pos: int, stage: Stage, signer: Signer,
                 config: WorkerConfig, channels: Channels, *, defer_answer_check: bool = False,
                 overlap_rows: int = OVERLAP_MAX_ROWS, on_output: OnOutput | None = None):
        self.route, self.job, self.replica, self.pos = route, int(route.job_id), replica, pos
        self.mask = route.mask_of(replica)  # servedMask of the route this session runs
        tail = pos + 1 == len(route.replicas[replica])
        self.stage, self.cache = stage, stage.new_cache()
        # the stage's one thread, which batches concurrent sessions' decode steps; None: run on this thread
        self.runner = scheduler_for(stage, config.batch_window_ms / 1e3, config.max_batch,
                                    config.prompt_chunk_tokens) if config.max_batch > 1 else None
        if self.runner is not None:
            self.runner.join(self.cache)
        self.signer, self.config = signer, config
        self.last = tail and route.kind == "causal-lm"  # a generating tail needs the last position only
        self.defer = defer_answer_check
        self.overlap_rows = overlap_rows  # inputs up to this many rows are verified while the stage runs
        self.pending: PendingCheck | None = None  # the last answer's check, when deferred
        self.on_output = on_output  # called on the tail with the output once it is complete
        self.tokens: list[int] = []  # ids chosen so far (by this tail, or relayed back by the next hop)
        self.output = b""  # the tail's canonical output, once the replica finished
        self.finished = False  # the tail has chosen the whole output
        self.positions = 0  # positions (tokens) fed through the stage so far
        self.compute_s = 0.0  # time in the stage's forward, seconds
        self.wait_s = 0.0  # time waiting for the next hop's answers, seconds
        self.times = StepTimes()  # where each decode step's time goes (the caller closes each step)
        self.link: Link | None = None  # the stream to the next hop; None on the tail
        self.channels = channels
        self.endpoint: str | None = None  # the next hop's endpoint; None on the tail
        # (forward, sessions of it bound for the same next hop) of the last step (a prompt or a decode step),
        # when it ran with others bound there: its message then goes out in one batch with theirs (worker.ring.batch)
        self.batch: tuple[tuple[int, int], int] | None = None
        self.closed = False  # the next hop answered this session's CLOSE
        me = route.hop(replica, pos)
        self.recorder = (ReceiptRecorder(route.job_id, replica, pos, signer.address, me.start, me.end)
                         if route.kind == "causal-lm" else None)  # classifiers run one step: no receipts
        # what the hop before this one sent, held against its receipt at CLOSE (the head receives ids)
        self.received = (ReceivedCheck(route.job_id, replica, pos - 1)
                         if self.recorder is not None and pos > 0 else None)
        if not tail:
            nxt = route.hop(replica, pos + 1)
            self.endpoint = nxt.endpoint
            self.link = Link(channels.stub(nxt.endpoint), nxt.node, config.hop_timeout_s, route.domain,
                             route.deadline)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Open the session on the next hop, on this session's route (its servedMask in the OPEN)."""
        if self.link is None:
            return
        msg = message(self.job, self.replica, self.pos, 0, pb.KIND_OPEN, session=self.link.nonce,
                      sent_unix_ms=time.time_ns() // 1_000_000, route=self.mask)
        self.link.call(self.signer.sign(msg, self.route.domain))

    def overlaps(self, n_rows: int) -> bool:
        """Whether an input of ``n_rows`` rows is verified while the stage runs (else before)."""
        return n_rows <= self.overlap_rows

    def note_input(self, step: int, payload: codec.Encoded, x: torch.Tensor) -> None:
        """Keep ``step``'s payload as the hop before this one sent it and ``x``, what it decoded to
        (checked against its receipt at CLOSE)."""
        if self.received is not None:
            self.received.add(step, payload, x)

    def forward(self, x: Activation, step: int, check: PendingCheck | None = None) -> Activation:
        """Run the stage on ``x``, the input of ``step``, while ``check`` runs (before, for a large
        ``x``); return its output once ``check`` passed. ``check``: the signature of the message ``x``
        came from; None = the deferred check of the last answer, if any (``x`` then holds that
        answer's token)."""
        if self.finished:
            raise ProtocolError(f"job {self.job} is finished; step {step} is past the end")
        if check is None:
            check, self.pending = self.pending, None
        first, times = tensors(x)[0], self.times
        if check is not None:
            if self.overlaps(rows(first.shape) if first.dim() > 2 else first.numel()):
                check.start()
            else:
                check.result()
        t0 = time.perf_counter()
        self.batch = None
        if self.runner is not None:
            req = self.runner.submit(x, self.cache, self.last, tag=self.endpoint)
            y = self.runner.wait(req, timeout_s=self.config.hop_timeout_s, times=times)
            if req.kind is not None and req.peers > 1 and self.link is not None:
                self.batch = ((id(self.runner), req.batch), req.peers)
        else:
            with torch.inference_mode():
                y = self.stage.forward(x, self.cache, last=self.last)
        t1 = time.perf_counter()
        self._ran(first, t1 - t0)
        if check is not None:
            check.result()  # before anything computed from x can leave this node
            times.add("verify_wait", time.perf_counter() - t1)
            times.checked(check.seconds)
        return y

    def _ran(self, first: torch.Tensor, seconds: float) -> None:
        """The stage ran ``first`` (the input's primary tensor) in ``seconds`` from hand-in to output:
        count its positions and its time (what the scheduler's queue and forward leave is the handoff)."""
        self.compute_s += seconds
        if self.runner is None:
            self.times.ran(0.0, seconds, 1)
        self.times.add("handoff", seconds - self.times.cur.get("queue", 0.0) - self.times.cur.get("forward", 0.0))
        self.positions += first.shape[1] if first.dim() > 1 else 1

    def send(self, y: Activation, step: int) -> tuple[Sequence[int], bytes]:
        """Pass ``step``'s output ``y`` on; return the ids the tail chose for it and the
        tail's output (empty until the replica is finished)."""
        if self.link is None:
            ids, output = self.choose(self.record(y, step), step)
        elif self.batch is not None:
            ids, output = self.accept(self._exchange_batched(y, step))
        else:
            ids, output = self.accept(self.exchange(self.outgoing(self.record(y, step), step)))
        self.seal()
        return ids, output

    def record(self, y: Activation, step: int) -> Activation:
        """Add ``step``'s output to this hop's receipt; return what is passed on (the same, unless the
        node is a byzantine test node)."""
        if self.config.byzantine and not self.config.byzantine_frame:
            y = corrupt(y, self.config.byzantine_noise, step)
        t0 = time.perf_counter()
        if self.recorder is not None:
            self.recorder.add(step, y)  # what leaves this node is what its receipt claims
        self.times.add("receipt", time.perf_counter() - t0)
        if self.config.byzantine and self.config.byzantine_frame:  # the framing attack: send what it did not sign
            y = corrupt(y, self.config.byzantine_noise, step)
        return y

    def choose(self, y: Activation, step: int) -> tuple[list[int], bytes]:
        """The tail's ids for ``step`` from its output ``y``, and its output once finished."""
        t1 = time.perf_counter()
        ids, output = self._choose(y, step)
        self.times.add("sample", time.perf_counter() - t1)
        return ids, output

    def outgoing(self, y: Activation, step: int) -> pb.HopMessage:
        """The signed STEP message that carries ``y`` to the next hop."""
        p, times = self.route.params, self.times
        t0 = time.perf_counter()
        payload, extras = encode_activation(y, p.codec, p.block)
        t1 = time.perf_counter()
        msg = message(self.job, self.replica, self.pos, step, pb.KIND_STEP, payload=payload, extras=extras,
                      session=self.link.nonce)
        t2 = time.perf_counter()
        self.signer.sign(msg, self.route.domain)
        times.add("encode", t1 - t0)
        times.add("message", t2 - t1)
        times.add("sign", time.perf_counter() - t2)
        return msg

    def exchange(self, msg: pb.HopMessage) -> pb.HopMessage:
        """Send ``msg`` to the next hop on this session's stream and wait for its answer (signature not
        yet checked)."""
        t0 = time.perf_counter()
        resp = self.link.exchange(msg)
        self._waited(time.perf_counter() - t0)
        return resp

    def _exchange_batched(self, y: Activation, step: int) -> pb.HopMessage:
        """Pass ``step``'s output ``y`` on in one batch with the other sessions of its forward bound for
        the same next hop (:class:`worker.ring.batch.Coalescer`): whichever of their threads sends the batch
        records and builds every member's message (:meth:`record`, :meth:`outgoing`, so each pipeline's
        times hear them) while the others wait; on this session's stream when the batch cannot go."""
        t0 = time.perf_counter()
        resp, msg, built_s = self.channels.coalescer(self.endpoint, self.link.peer).exchange_built(
            self.batch[0], self.batch[1], lambda: self.outgoing(self.record(y, step), step), self.config.hop_timeout_s)
        if resp is None:
            resp = self.link.exchange(msg)
        self._waited(time.perf_counter() - t0 - built_s)
        return resp

    def _waited(self, seconds: float) -> None:
        self.wait_s += seconds
        self.times.add("next_hop", seconds)

    def accept(self, resp: pb.HopMessage) -> tuple[Sequence[int], bytes]:
        """Take the next hop's answer to this session's step: check its signature (or, on the head,
        start the check, joined by the next step), keep its ids; return them and the tail's output."""
        t0 = time.perf_counter()
        if self.defer:
            self.pending = PendingCheck(resp, self.link.peer, self.route.domain)
        else:
            verify(resp, self.link.peer, self.route.domain)
        self.times.add("answer_check", time.perf_counter() - t0)
        self.tokens.extend(resp.ids)
        self.output = resp.output or self.output
        return resp.ids, resp.output

    def seal(self) -> None:
        """Seal the receipt chunks (this hop's, and what it received) whose tokens are all known."""
        t0 = time.perf_counter()
        if self.recorder is not None:
            self.recorder.seal(self.tokens)
        if self.received is not None:
            self.received.seal(self.tokens)
        self.times.add("receipt", time.perf_counter() - t0)

    def step(self, x: Activation, step: int) -> tuple[Sequence[int], bytes]:
        """:meth:`forward` then :meth:`send` (the head's step)."""
        return self.send(self.forward(x, step), step)

    def finish(self, step: int, upstream: Sequence[SignedReceipt] = ()) -> None:
        """Join the last deferred check, then close the session on the next hop at ``step``, handing
        it ``upstream`` (the receipts of the hops before this one) and this hop's own signed receipt;
        a finished tail checks them all and delivers its output with them."""
        if self.pending is not None:
            self.pending.result()
            self.pending = None
        signed = list(upstream)
        if self.received is not None and step > 0 and signed:  # none: a teardown, nothing to pass on or commit
            self.received.check(signed[-1].receipt, self.tokens[:step])
        if self.recorder is not None and step > 0:
            signed.append(sign(self.recorder.receipt(self.tokens[:step]), self.signer, self.route.domain))
        if self.link is not None:
            msg = message(self.job, self.replica, self.pos, step, pb.KIND_CLOSE, session=self.link.nonce)
            msg.receipts.extend(s.to_pb() for s in signed)
            self.link.call(self.signer.sign(msg, self.route.domain))
            self.closed = True
        elif self.finished:
            self._deliver(tuple(signed))

    def _deliver(self, signed: tuple[SignedReceipt, ...]) -> None:
        if signed or self.recorder is not None:
            check_replica(signed, self.route.replicas[self.replica], self.job, self.replica,
                          output_hash(self.output), len(self.tokens), self.route.domain)
        if self.on_output is not None:
            self.on_output(self.job, self.replica, self.output, self.mask, signed)
        logger.info("job %s replica %s delivered: %d ids, %d receipts", self.job, self.replica, len(self.tokens),
                    len(signed))

    def close(self) -> None:
        """Close the stream to the next hop and drop the cache."""
        if self.link is not None:
            self.link.close(wait=not self.closed)
        if self.runner is not None and self.cache is not None:
            self.runner.release(self.cache)
        self.cache = None

    def _choose(self, y: torch.Tensor, step: int) -> tuple[list[int], bytes]:
        ids, self.finished = tail_choose(self.route, y, step, self.tokens)
        self.tokens.extend(ids)
        if not self.finished:
            return ids, b""
        self.output = encode_output(self.tokens)
        logger.info("job %s replica %s finished: %d ids", self.job, self.replica, len(self.tokens))
        return ids, self.output


def tail_choose(route: JobRoute, y: torch.Tensor, step: int, history: Sequence[int]) -> tuple[list[int], bool]:
    """The tail's choice at ``step``: (ids, finished). Language: one token (``history``: the ids
    chosen before it); classifier: class ids; embedding: its grid words (proto.types.embedding_words)."""
    if route.kind == "classifier":
        return argmax_classes(y), True
    if route.kind == "embedding":
        return embedding_words(y.detach().to("cpu", torch.float32).flatten().tolist()), True
    p = route.params
    tok = sample(y[0, -1], p.temperature_milli, p.seed, step, top_k=p.top_k, top_p_milli=p.top_p_milli,
                 repetition_penalty_milli=p.repetition_penalty_milli, history=history)
    return [tok], len(history) + 1 >= p.max_tokens or tok in p.eos_token_ids


def forward_many(pipes: Sequence[Pipeline], xs: Sequence[Activation]) -> list[Activation | BaseException]:
    """Each pipeline's stage on its input (already verified: a batch's messages are checked before),
    handed to the stages' schedulers together so that they run as one batch; per pipeline its output
    or the error that stopped it. Every pipeline's times hear its queue, forward and handoff."""
    out: list[Activation | BaseException | None] = [None] * len(pipes)
    t0 = time.perf_counter()
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, p in enumerate(pipes):
        if p.finished:
            out[i] = ProtocolError(f"job {p.job} is finished; no step is past the end")
        elif p.runner is not None:
            groups.setdefault((id(p.runner), p.last), []).append(i)
    reqs = {}
    for idx in groups.values():
        runner, last = pipes[idx[0]].runner, pipes[idx[0]].last
        steps = [(to_stage(xs[i], pipes[i].stage.device, pipes[i].stage.dtype), pipes[i].cache) for i in idx]
        reqs.update(zip(idx, runner.submit_many(steps, last, [pipes[i].endpoint for i in idx], whole=True)))
    for i, p in enumerate(pipes):
        if out[i] is not None:
            continue
        t1 = time.perf_counter()  # a stage without a scheduler runs its pipelines one after another
        try:
            if p.runner is not None:
                out[i] = p.runner.wait(reqs[i], timeout_s=p.config.hop_timeout_s, times=p.times)
            else:
                with torch.inference_mode():
                    out[i] = p.stage.forward(to_stage(xs[i], p.stage.device, p.stage.dtype), p.cache, last=p.last)
        except BaseException as exc:  # noqa: BLE001 - this pipeline's error; the others go on
            out[i] = exc
            continue
        p._ran(tensors(xs[i])[0], time.perf_counter() - (t0 if p.runner is not None else t1))
    return out
