"""The worker side of the ring: handle one hop message of a session.

``HopRuntime.handle`` is the backend of the gRPC servicer. For each request it
authenticates the sender against the plan (signature, planned predecessor,
step order), runs the stage on the session's cache, and then either forwards
the activations to the next hop and relays its answer, or, on the tail,
samples the next token (or the class ids) and answers with it. The step itself
is the session's :class:`worker.ring.pipeline.Pipeline`, the code the head runs
too: a step's signature is checked on a second thread while the stage runs, and
joined before the activations are forwarded or the token answered.
"""

from __future__ import annotations

import logging
import time

import torch

from proto.errors import ProtocolError, TesseraError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId
from worker.config import WorkerConfig
from worker.planview import JobRoute, PlanView
from worker.ring.link import Channels, message, payload_of
from worker.ring.pipeline import OnOutput, Pipeline
from worker.sessions import Session, SessionKey, SessionTable
from worker.signing import PendingCheck, Signer, verify
from worker.stage import Stage
from worker.stagepool import Loader, StagePool

logger = logging.getLogger(__name__)


class HopRuntime:
    """Executes the hops this worker is planned for."""

    def __init__(self, config: WorkerConfig, stage: Stage, planview: PlanView, signer: Signer,
                 on_output: OnOutput | None = None, channels: Channels | None = None,
                 loader: Loader | None = None):
        self.config, self.stage, self.planview, self.signer = config, stage, planview, signer
        self.stages = StagePool(stage, loader)  # the loaded span and planned sub-spans of it
        self.on_output = on_output
        self.channels = channels or Channels(config.max_message_bytes)
        self.sessions = SessionTable(config.session_ttl_s, config.session_max_bytes, config.max_sessions)
        self.tokens_per_second = 0.0  # moving average over decode steps

    # ------------------------------------------------------------------ entry
    def handle(self, msg: pb.HopMessage, stream: set[SessionKey] | None = None) -> pb.HopMessage:
        """Answer one request; raises TesseraError families on refusal.

        ``stream``: the sessions opened on the gRPC stream this request came
        on (the servicer passes one set per stream). With it, a session takes
        steps and CLOSE only from the stream that opened it, and a step's
        signature is checked while the stage runs on it, since a refusal then
        ends the stream and the session with it. Without it (direct calls),
        every signature is checked first.
        """
        key = (int(msg.job_id), msg.replica) if msg.job_id.isdigit() else (-1, msg.replica)
        if stream is not None and msg.kind != pb.KIND_OPEN and key not in stream:
            raise ProtocolError(f"job {msg.job_id} replica {msg.replica} has no session opened on this stream")
        step = msg.kind == pb.KIND_STEP
        route, pos, signature = self._authenticate(msg, key[0], defer_signature=step and stream is not None)
        if msg.kind == pb.KIND_OPEN:
            self._open(route, pos, msg, key)
            if stream is not None:
                stream.add(key)
        elif step:
            try:
                return self._step(msg, self.sessions.get(key), signature)
            except TesseraError:
                if signature is not None:
                    signature.result()  # a forged message is refused as forged, whatever else is wrong
                raise
        elif msg.kind == pb.KIND_CLOSE:
            s = self.sessions.get(key)
            s.pipe.finish(msg.step)
            n = max(s.next_step, 1)
            logger.info("closed job %s replica %s at hop %d: %d steps, %.1f ms/step compute, %.1f ms/step "
                        "waiting for the next hop, %.1f ms/step total", key[0], key[1], pos, s.next_step,
                        1e3 * s.pipe.compute_s / n, 1e3 * s.pipe.wait_s / n, 1e3 * s.busy_s / n)
            self.sessions.close(key)
            if stream is not None:
                stream.discard(key)
        else:
            raise ProtocolError(f"message kind {msg.kind} is not OPEN, STEP or CLOSE")
        return self._answer(msg, pos)

    def _authenticate(self, msg: pb.HopMessage, job: int, defer_signature: bool = False
                      ) -> tuple[JobRoute, int, PendingCheck | None]:
        """(route, this node's position, the signature check if deferred, else None); ``job``
        is the message's job id, -1 if it is not a decimal number."""
        if msg.upstream:
            raise ProtocolError("a response was sent as a request")
        route = self.planview.route(JobId(job))
        pos = route.position(msg.replica, self.signer.address)
        if pos == 0 or msg.hop != pos - 1:
            raise ProtocolError(f"this node is hop {pos} of replica {msg.replica}; it accepts only hop "
                                f"{pos - 1}, not hop {msg.hop}")
        sender = route.hop(msg.replica, pos - 1).node
        if defer_signature:
            return route, pos, PendingCheck(msg, sender)
        verify(msg, sender)
        return route, pos, None

    def _answer(self, msg: pb.HopMessage, pos: int, ids=(), output: bytes = b"") -> pb.HopMessage:
        return self.signer.sign(message(int(msg.job_id), msg.replica, pos, msg.step, msg.kind,
                                        upstream=True, ids=ids, output=output))

    # ------------------------------------------------------------------ kinds
    def _open(self, route: JobRoute, pos: int, msg: pb.HopMessage, key) -> None:
        hop = route.hop(msg.replica, pos)
        stage = self.stages.get(hop.start, hop.end)
        s = self.sessions.open(key)
        try:
            s.pipe = Pipeline(route, msg.replica, pos, stage, self.signer, self.config, self.channels,
                              on_output=self.on_output)
            s.pipe.open()
        except Exception:
            self.sessions.close(key)
            raise
        logger.info("opened job %s replica %s at hop %d [%d, %d)", key[0], key[1], pos, hop.start, hop.end)

    def _step(self, msg: pb.HopMessage, s: Session, signature: PendingCheck | None = None) -> pb.HopMessage:
        if msg.step != s.next_step:
            raise ProtocolError(f"expected step {s.next_step} of job {msg.job_id}, got step {msg.step} "
                                "(replayed or out of order)")
        t_in = time.perf_counter()
        pipe = s.pipe
        stage = pipe.stage
        x = payload_of(msg, self.config.max_payload_bytes).to(stage.device, stage.dtype)
        before = pipe.compute_s
        y = pipe.forward(x, msg.step, signature)
        self._measure(x, pipe.compute_s - before)
        s.next_step += 1
        self.sessions.account(s, stage.cache_bytes(pipe.cache))  # over the memory cap, the step ends here
        ids, output = pipe.send(y, msg.step)
        answer = self._answer(msg, pipe.pos, ids=ids, output=output)
        s.busy_s += time.perf_counter() - t_in
        return answer

    def _measure(self, x: torch.Tensor, seconds: float) -> None:
        if x.dim() == 3 and x.shape[1] == 1 and seconds > 0:
            rate = 1.0 / seconds
            self.tokens_per_second = rate if not self.tokens_per_second else 0.9 * self.tokens_per_second + 0.1 * rate

    def close(self) -> None:
        self.sessions.close_all()
        self.channels.close()

