"""The worker's gRPC service (``tessera.v1.WorkerService``).

Handlers are thin: parse, authenticate (inside the runtime), log one line per
session, call :class:`worker.ring.HopRuntime`, serialise. A refused message
aborts only its own stream with a gRPC status and a one-line message; the
server keeps serving. Streams run on a bounded pool of handler threads sized
so that idle streams (capped and ended by :class:`worker.streams.StreamBook`)
can never take the threads that Ping, Info and live sessions need.
A process runs it through ``tessera operator run``: on chain with
``--config node.toml``, or over a static plan with ``--plan-file plan.json``.

Transport: plaintext gRPC. Every hop message is signed and bound to its
session, so a listener cannot forge or replay one, but it can read the
activations; TLS with pinned certificates is not built yet.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import grpc
import torch

from proto.errors import CodecError, ConfigError, JobInputError, ProtocolError, TesseraError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker import codec, stream
from worker.config import WorkerConfig
from worker.limits import ModelLimits
from worker.planview import PlanView
from worker.ratelimit import RequestLimit, peer_host
from worker.ring import HopRuntime, OnOutput, Stream
from worker.ring.link import KEEPALIVE, PeerTimeout
from worker.scheduler import StageBusy
from worker.sessions import SessionError
from worker.signing import Signer, load_key
from worker.stage import Stage
from worker.stagepool import Loader
from worker.store import resolve
from worker.streams import StreamBook
from worker.tls import identity
from worker.wire import MessageError, safe
from worker.wire import job_id as wire_job_id

logger = logging.getLogger(__name__)

# deterministic refusals (the input can never run) are INVALID_ARGUMENT: a head does not retry them
_STATUS = [(MessageError, grpc.StatusCode.INVALID_ARGUMENT), (CodecError, grpc.StatusCode.INVALID_ARGUMENT),
           (JobInputError, grpc.StatusCode.INVALID_ARGUMENT), (PeerTimeout, grpc.StatusCode.UNAVAILABLE),
           (ProtocolError, grpc.StatusCode.PERMISSION_DENIED), (SessionError, grpc.StatusCode.RESOURCE_EXHAUSTED),
           (StageBusy, grpc.StatusCode.UNAVAILABLE),
           (TesseraError, grpc.StatusCode.FAILED_PRECONDITION)]


def status_of(exc: TesseraError) -> grpc.StatusCode:
    """The gRPC status a refusal of ``exc``'s kind is answered with."""
    return next(c for cls, c in _STATUS if isinstance(exc, cls))


SPARE_THREADS = 32  # handler threads beyond live sessions and idle streams: Ping, Info, refusals
SWEEP_S = 0.25  # how often quiet streams and expired sessions are looked for, seconds
RECEIPT_REQUESTS_PER_S = 20  # GetReceipts answered per second at most (each may carry MAX_RECEIPTS receipts)
RECEIPT_REQUESTS_PER_PEER_S = 2.0  # GetReceipts per second from one peer host, sustained (a verifier asks once
# per replica it judges, retrying with a backoff from 0.5 s)
RECEIPT_BURST_PER_PEER = 8  # GetReceipts one peer host may send at once
RECEIPT_PEERS = 1024  # peer hosts whose receipt allowance is remembered; the least recent is forgotten past it
REFUSALS_LOGGED_PER_S = 10  # refusal log lines per second at most; the rest are counted (a flood fills no disk)
# How long a thread may hold the GIL while another waits, seconds: Python's default, 0.005. Every message wakes
# two threads in turn (gRPC's poller, then the session's handler) while the stage's thread runs Python between
# torch ops. 1 ms was tried: neutral on CPU, and on an H200 the launch-bound forwards lost to it (1B bf16 ring,
# warm runs: 24-26 tokens/s at 1 ms vs 31 at 5 ms for one session, 41-44 vs 54 for 16; bench/results/
# hopprofile-gpu-nvidia-h200-1b-bf16*.json). TESSERA_GIL_SWITCH_S overrides it (bench/gpu/profile.sh).
GIL_SWITCH_S = float(os.environ.get("TESSERA_GIL_SWITCH_S", "0.005"))


def set_gil_switch() -> None:
    """Set the interpreter's GIL switch interval to ``GIL_SWITCH_S`` (Python's default unless overridden)."""
    sys.setswitchinterval(GIL_SWITCH_S)


def _version() -> str:
    try:
        return version("tessera")
    except PackageNotFoundError:
        return "0+unknown"


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    """gRPC handlers over a :class:`HopRuntime`."""

    def __init__(self, runtime: HopRuntime, streams: StreamBook):
        self.runtime, self.streams = runtime, streams
        self._log_lock = threading.Lock()
        self._log_window, self._logged, self._unlogged = 0, 0, 0  # this second; lines logged in it; suppressed
        self.receipt_limit = RequestLimit("receipt requests", RECEIPT_REQUESTS_PER_S, RECEIPT_REQUESTS_PER_PEER_S,
                                          RECEIPT_BURST_PER_PEER, RECEIPT_PEERS)

    def Forward(self, request_iterator, context):
        stream, msg = Stream(), None
        entry = self.streams.enter(peer_host(context.peer()), context.cancel, lambda: self.runtime.live(stream))
        try:
            for msg in request_iterator:
                self.streams.begin(entry)
                resp = self.runtime.handle(msg, stream)
                if stream.session is not None and stream.session.touch is None:  # its steps may come in batches
                    stream.session.touch = functools.partial(self.streams.touch, entry)
                self.streams.done(entry, stream.session is not None)
                yield resp
        except TesseraError as exc:
            code = status_of(exc)
            self._log_refusal(msg, exc)
            context.abort(code, safe(exc, 500))
        except grpc.RpcError:  # the stream was cancelled: by its peer, or ended here for idleness
            pass
        except Exception as exc:  # noqa: BLE001 - a bug must end its stream, not the server
            logger.exception("internal error on job %s step %s", safe(getattr(msg, "job_id", ""), 40),
                             getattr(msg, "step", None))
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {safe(f'{type(exc).__name__}: {exc}', 300)}")
        finally:
            self.runtime.end_stream(stream)
            self.streams.leave(entry)

    def ForwardBatch(self, request_iterator, context):
        # A batch stream carries no session of its own: it stays in the idle class of StreamBook (capped per
        # peer, ended when quiet), and the sessions its steps belong to are kept alive through their streams.
        entry = self.streams.enter(peer_host(context.peer()), context.cancel)
        try:
            for batch in request_iterator:
                self.streams.begin(entry)
                if len(batch.codes):
                    raise MessageError("a batch request carries no codes; those are for answers")
                answers = self.runtime.handle_batch(batch.messages)
                self.streams.done(entry, False)
                yield self._batch_answer(batch.messages, answers)
        except TesseraError as exc:
            code = status_of(exc)
            context.abort(code, safe(exc, 500))
        except grpc.RpcError:  # cancelled: by its peer, or ended here for idleness
            pass
        finally:
            self.streams.leave(entry)

    def _batch_answer(self, msgs, answers) -> pb.HopBatch:
        out = pb.HopBatch()
        for msg, a in zip(msgs, answers):
            if isinstance(a, pb.HopMessage):
                out.messages.append(a)
                out.codes.append(0)
                continue
            if isinstance(a, TesseraError):
                code = status_of(a)
                self._log_refusal(msg, a)
                text = safe(a, 500)
            else:  # a bug fails its own session, not the server or the rest of the batch
                logger.error("internal error on job %s step %s", safe(msg.job_id, 40), msg.step,
                             exc_info=(type(a), a, a.__traceback__))
                code, text = grpc.StatusCode.INTERNAL, f"internal error: {safe(f'{type(a).__name__}: {a}', 300)}"
            out.messages.append(pb.HopMessage(job_id=safe(msg.job_id, 80), replica=msg.replica, step=msg.step,
                                              kind=msg.kind, session=msg.session[:64], upstream=True, error=text))
            out.codes.append(code.value[0])
        return out

    def _log_refusal(self, msg: pb.HopMessage, exc: TesseraError) -> None:
        with self._log_lock:
            now = int(time.monotonic())
            if now != self._log_window:
                self._log_window, self._logged = now, 0
            if self._logged >= REFUSALS_LOGGED_PER_S:
                self._unlogged += 1
                return
            self._logged += 1
            unlogged, self._unlogged = self._unlogged, 0
        more = f" ({unlogged} more refusals not logged)" if unlogged else ""
        logger.warning("refused job %s step %s from %s: %s%s", safe(msg.job_id, 40), msg.step, safe(msg.sender, 50),
                       safe(exc, 300), more)

    def Info(self, request, context):
        rt, spec = self.runtime, self.runtime.stage.spec
        return pb.InfoResponse(model=spec.model, num_blocks=spec.num_blocks, start=spec.start, end=spec.end,
                               node=rt.signer.address, sessions=len(rt.sessions),
                               free_cache_bytes=max(0, rt.config.session_max_bytes - rt.sessions.used_bytes()),
                               tokens_per_second=rt.tokens_per_second, version=_version(),
                               device=str(rt.stage.device), codecs=_codecs(), batched_steps=rt.batched_steps)

    def Ping(self, request, context):
        return pb.PingResponse(sent_unix_ns=request.sent_unix_ns, received_unix_ns=time.time_ns())

    def GetReceipts(self, request, context):
        refused = self.receipt_limit.refusal(context.peer())
        if refused:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        try:
            signed = self.runtime.receipts_of(wire_job_id(request.job_id), request.replica)
        except TesseraError as exc:
            code = status_of(exc)
            context.abort(code, safe(exc, 500))
        logger.info("receipts of job %s replica %d handed to %s", request.job_id, request.replica,
                    safe(context.peer(), 60))
        return pb.ReceiptsResponse(receipts=[s.to_pb() for s in signed])


@functools.lru_cache(maxsize=1)
def _codecs() -> list[int]:
    """Codec ids this worker can decode (probing bitsandbytes is slow: done once, at start)."""
    try:
        codec.dynamic_map()
        return sorted(codec.NAMES)
    except CodecError:
        return [c for c in sorted(codec.NAMES) if c != codec.INT8_DYNAMIC]


@dataclass(frozen=True)
class RunningWorker:
    server: grpc.Server
    port: int  # bound TCP port
    runtime: HopRuntime
    streams: StreamBook
    tokens: stream.TokenHub | None = None  # token events of the replicas this node heads (StreamService)

    def stop(self, grace_s: float = 1.0) -> None:
        self.server.stop(grace_s).wait()
        self.runtime.close()


def start(config: WorkerConfig, stage: Stage, planview: PlanView, on_output: OnOutput | None = None,
          signer: Signer | None = None, loader: Loader | None = None,
          limits: ModelLimits | None = None) -> RunningWorker:
    """Start serving ``stage`` on ``config.host:config.port`` (0 picks a free port).

    ``loader(start, end)`` loads a sub-span stage when a plan gives this node less
    than the span it loaded (see :mod:`worker.stagepool`); without one such plans are refused.
    ``limits``: the model's context length and width, enforced on every session.
    """
    signer = signer or load_key(config.key_file, config.private_key)
    set_gil_switch()
    runtime = HopRuntime(config, stage, planview, signer, on_output, loader=loader, limits=limits)
    streams = StreamBook(config.max_idle_streams, config.max_idle_streams_per_peer, config.stream_idle_s,
                         config.session_ttl_s)
    opts = [("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.max_receive_message_length", config.max_message_bytes), *KEEPALIVE,
            ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0)]
    threads = config.max_sessions + config.max_idle_streams + config.max_subscribers + SPARE_THREADS
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"), options=opts)
    pb_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(runtime, streams), server)
    tokens = stream.add_to_server(server, config.max_subscribers)
    if config.tls:
        creds = grpc.ssl_server_credentials([identity(config.tls_path(signer.address))])
        port = server.add_secure_port(f"{config.host}:{config.port}", creds)
    else:
        port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise TesseraError(f"cannot bind {config.host}:{config.port}; is the port in use?")
    _codecs()  # warm: Info must answer within a prober's timeout
    server.start()
    _start_sweeper(runtime, streams)
    logger.info("worker %s serves %s [%d, %d) on %s:%d%s", signer.address, stage.spec.model,
                stage.spec.start, stage.spec.end, config.host, port, " over TLS" if config.tls else "")
    return RunningWorker(server, port, runtime, streams, tokens)


def serve(config: WorkerConfig, planview: PlanView, on_output: OnOutput | None = None,
          signer: Signer | None = None) -> RunningWorker:
    """Load the configured span (:func:`load_stage`) and :func:`start` serving it; sub-spans
    that plans give this node are loaded the same way."""
    torch.set_num_threads(config.threads)
    model_dir = config.model_dir if config.model_dir is not None else resolve(config.model)
    return start(config, load_stage(config), planview, on_output, signer,
                 loader=lambda a, b: load_stage(config.model_copy(update={"start": a, "end": b})),
                 limits=ModelLimits.of(model_dir))


def _start_sweeper(runtime: HopRuntime, streams: StreamBook) -> None:
    def loop():
        while True:
            time.sleep(SWEEP_S)
            streams.sweep()
            runtime.sessions.expire()

    threading.Thread(target=loop, name="stream-sweeper", daemon=True).start()


def load_stage(config: WorkerConfig) -> Stage:
    """Load the served span with ``config.loader`` ("module:function" or "path/file.py:function")."""
    if config.end is None:
        raise ConfigError("say which blocks to serve: --start S --end E (half-open)")
    model_dir = config.model_dir if config.model_dir is not None else resolve(config.model)
    weights = {} if config.weights == "fp32" else {"weights": config.weights}  # custom loaders: fp32 only
    return _loader(config.loader)(model_dir, config.start, config.end, device=config.device,
                           dtype=getattr(torch, config.dtype), **weights)


def _loader(loader: str):
    mod_name, _, fn = loader.rpartition(":")
    try:
        if mod_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location("tessera_stage_loader", mod_name)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
        return getattr(mod, fn)
    except (ImportError, OSError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot use the stage loader {loader!r} ({exc}); give module:function or "
                          "path/file.py:function") from exc
