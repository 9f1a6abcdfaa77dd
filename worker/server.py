"""The worker's gRPC service (``tessera.v1.WorkerService``).

Handlers are thin: parse, authenticate (inside the runtime), log one line per
session, call :class:`worker.ring.HopRuntime`, serialise. A refused message
aborts only its own stream with a gRPC status; the server keeps serving.
A process runs it through ``tessera operator run``: on chain with
``--config node.toml``, or over a static plan with ``--plan-file plan.json``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import grpc
import torch

from proto.errors import CodecError, ConfigError, ProtocolError, TesseraError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker import codec, stream
from worker.config import WorkerConfig
from worker.planview import PlanView
from worker.ring import HopRuntime, OnOutput
from worker.sessions import SessionError
from worker.signing import Signer, load_key
from worker.stage import Stage
from worker.stagepool import Loader
from worker.store import resolve

logger = logging.getLogger(__name__)

_STATUS = [(CodecError, grpc.StatusCode.INVALID_ARGUMENT), (ProtocolError, grpc.StatusCode.PERMISSION_DENIED),
           (SessionError, grpc.StatusCode.RESOURCE_EXHAUSTED), (TesseraError, grpc.StatusCode.FAILED_PRECONDITION)]


def _version() -> str:
    try:
        return version("tessera")
    except PackageNotFoundError:
        return "0+unknown"


class WorkerServicer(pb_grpc.WorkerServiceServicer):
    """gRPC handlers over a :class:`HopRuntime`."""

    def __init__(self, runtime: HopRuntime):
        self.runtime = runtime

    def Forward(self, request_iterator, context):
        opened: set[tuple[int, int]] = set()
        try:
            for msg in request_iterator:
                resp = self.runtime.handle(msg, opened)
                if msg.kind == pb.KIND_OPEN:
                    logger.info("session job %s replica %s opened by %s", msg.job_id, msg.replica, msg.sender)
                yield resp
        except TesseraError as exc:
            code = next(c for cls, c in _STATUS if isinstance(exc, cls))
            logger.warning("refused job %s step %s from %s: %s", msg.job_id, msg.step, msg.sender, exc)
            context.abort(code, str(exc))
        finally:
            for key in opened:  # a stream owns the sessions it opened
                self.runtime.sessions.close(key)

    def Info(self, request, context):
        rt, spec = self.runtime, self.runtime.stage.spec
        return pb.InfoResponse(model=spec.model, num_blocks=spec.num_blocks, start=spec.start, end=spec.end,
                               node=rt.signer.address, sessions=len(rt.sessions),
                               free_cache_bytes=max(0, rt.config.session_max_bytes - rt.sessions.used_bytes()),
                               tokens_per_second=rt.tokens_per_second, version=_version(),
                               device=str(rt.stage.device), codecs=_codecs())

    def Ping(self, request, context):
        return pb.PingResponse(sent_unix_ns=request.sent_unix_ns, received_unix_ns=time.time_ns())


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
    tokens: stream.TokenHub | None = None  # token events of the replicas this node heads (StreamService)

    def stop(self, grace_s: float = 1.0) -> None:
        self.server.stop(grace_s).wait()
        self.runtime.close()


def start(config: WorkerConfig, stage: Stage, planview: PlanView, on_output: OnOutput | None = None,
          signer: Signer | None = None, loader: Loader | None = None) -> RunningWorker:
    """Start serving ``stage`` on ``config.host:config.port`` (0 picks a free port).

    ``loader(start, end)`` loads a sub-span stage when a plan gives this node less
    than the span it loaded (see :mod:`worker.stagepool`); without one such plans are refused.
    """
    signer = signer or load_key(config.key_file, config.private_key)
    runtime = HopRuntime(config, stage, planview, signer, on_output, loader=loader)
    opts = [("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.max_receive_message_length", config.max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.grpc_workers), options=opts)
    pb_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(runtime), server)
    tokens = stream.add_to_server(server, config.grpc_workers)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise TesseraError(f"cannot bind {config.host}:{config.port}; is the port in use?")
    _codecs()  # warm: Info must answer within a prober's timeout
    server.start()
    _start_reaper(runtime, config.session_ttl_s)
    logger.info("worker %s serves %s [%d, %d) on %s:%d", signer.address, stage.spec.model,
                stage.spec.start, stage.spec.end, config.host, port)
    return RunningWorker(server, port, runtime, tokens)


def serve(config: WorkerConfig, planview: PlanView, on_output: OnOutput | None = None,
          signer: Signer | None = None) -> RunningWorker:
    """Load the configured span (:func:`load_stage`) and :func:`start` serving it; sub-spans
    that plans give this node are loaded the same way."""
    torch.set_num_threads(config.threads)
    return start(config, load_stage(config), planview, on_output, signer,
                 loader=lambda a, b: load_stage(config.model_copy(update={"start": a, "end": b})))


def _start_reaper(runtime: HopRuntime, ttl_s: float) -> None:
    def loop():
        while True:
            time.sleep(min(ttl_s, 30.0))
            runtime.sessions.expire()

    threading.Thread(target=loop, name="session-reaper", daemon=True).start()


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
