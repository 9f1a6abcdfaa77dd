"""Peers for worker tests: real worker processes on 127.0.0.1, sessions written by hand (as an
honest predecessor, or as a recording an attacker replays), a peer that never answers, and
streams that are opened and left idle."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import torch
from eth_account import Account

from chain.devnet import free_port  # noqa: F401 (re-exported)
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from proto.types import JobId, NodeId
from tessera.procs import stop_processes
from worker import codec
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView
from worker.ring.link import message
from worker.signing import Signer
from worker.wire import ZERO_ADDRESS, domain_separator

sys.path.insert(0, str(Path(__file__).parent))
from test_worker_tiny import TinyLM, TinyStage, save  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tessera.cli.main", "operator", "run"]
LOADER = str(Path(__file__).parent / "test_worker_tiny.py") + ":load_stage"
KEYS = ["0x" + f"{i + 1:064x}" for i in range(3)]  # head, hop 1, tail
ADDRS = [Account.from_key(k).address for k in KEYS]
SPANS = [(0, 2), (2, 5), (5, 6)]
PROMPT = [5, 17, 42, 8]
DOMAIN = domain_separator(0, ZERO_ADDRESS)
HIDDEN, CONTEXT = 32, 64  # the tiny model's width, and the context its config.json states


def route(job: int, ports, params: GenParams, endpoints=None) -> JobRoute:
    eps = endpoints or [f"127.0.0.1:{p}" for p in ports]
    hops = tuple(HopRoute(NodeId(a), e, s, t) for a, e, (s, t) in zip(ADDRS, eps, SPANS))
    return JobRoute(JobId(job), "tiny", 6, (hops,), params)


def tiny_model(folder: Path) -> Path:
    """The tiny LM of test_worker_tiny, with a config.json stating its width and context."""
    model_dir = save(folder)
    (model_dir / "config.json").write_text(json.dumps({"hidden_size": HIDDEN, "max_position_embeddings": CONTEXT}))
    return model_dir


@contextlib.contextmanager
def ring_workers(tmp: Path, view: StaticPlanView, ports, *flags: str):
    """Worker processes for hop 1 [2, 5) and the tail [5, 6) (the test is the head); their logs are
    ``tmp/worker{1,2}.log``; always stopped. Yields the processes."""
    model_dir = tiny_model(tmp / "tiny")
    plan = tmp / "plan.json"
    view.to_file(plan)
    procs = []
    try:
        for i in (1, 2):
            cmd = [*WORKER, "--plan-file", str(plan), "--model-dir", str(model_dir), "--start", str(SPANS[i][0]),
                   "--end", str(SPANS[i][1]), "--port", str(ports[i]), "--private-key", KEYS[i], "--loader",
                   LOADER, *flags]
            log = open(tmp / f"worker{i}.log", "w")
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True))
        for p in procs:
            line = p.stdout.readline()
            assert line.startswith("READY"), f"worker did not start: {line!r}"
        yield procs
    finally:
        stop_processes(procs)


def head_stage() -> TinyStage:
    return TinyStage(TinyLM().eval(), *SPANS[0])


def stub(port: int) -> pb_grpc.WorkerServiceStub:
    return pb_grpc.WorkerServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


class Sender:
    """Writes the messages of one session as the planned predecessor ``key`` at ``hop``."""

    def __init__(self, job: int, key: str = KEYS[1], hop: int = 1, replica: int = 0, domain: bytes = DOMAIN):
        self.job, self.hop, self.replica, self.domain = job, hop, replica, domain
        self.signer, self.nonce = Signer(key), os.urandom(32)

    def open(self, step: int = 0, sent_unix_ms: int | None = None) -> pb.HopMessage:
        ms = time.time_ns() // 10**6 if sent_unix_ms is None else sent_unix_ms
        return self._sign(message(self.job, self.replica, self.hop, step, pb.KIND_OPEN, session=self.nonce,
                                  sent_unix_ms=ms))

    def step(self, step: int, enc: codec.Encoded) -> pb.HopMessage:
        return self._sign(message(self.job, self.replica, self.hop, step, pb.KIND_STEP, payload=enc,
                                  session=self.nonce))

    def close(self, step: int) -> pb.HopMessage:
        return self._sign(message(self.job, self.replica, self.hop, step, pb.KIND_CLOSE, session=self.nonce))

    def _sign(self, msg: pb.HopMessage) -> pb.HopMessage:
        return self.signer.sign(msg, self.domain)


def hidden(tokens: int = 1, width: int = HIDDEN, cid: int = codec.FP32) -> codec.Encoded:
    return codec.encode(torch.randn(1, tokens, width, generator=torch.Generator().manual_seed(tokens)), cid)


def refusal(port: int, msgs, timeout_s: float = 30.0) -> grpc.RpcError:
    """Send ``msgs`` on one stream; return the error that ended it (AssertionError if none did)."""
    try:
        list(stub(port).Forward(iter(msgs), timeout=timeout_s))
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the stream was not refused")


class HeldStream:
    """A Forward stream whose requests the test sends one at a time (and may leave idle)."""

    _END = object()

    def __init__(self, channel: grpc.Channel):
        self._q: queue.Queue = queue.Queue()
        self._resp = pb_grpc.WorkerServiceStub(channel).Forward(self._requests())

    def _requests(self):
        while (item := self._q.get()) is not self._END:
            yield item

    def send(self, msg: pb.HopMessage) -> pb.HopMessage:
        self._q.put(msg)
        return next(self._resp)

    def end(self) -> None:
        self._q.put(self._END)
        with contextlib.suppress(grpc.RpcError):
            list(self._resp)

    def cancel(self) -> None:
        self._resp.cancel()


@contextlib.contextmanager
def idle_streams(port: int, n: int, channels: int = 8):
    """``n`` Forward streams that send nothing, spread over ``channels`` connections; always closed."""
    chans = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    streams = [HeldStream(chans[i % channels]) for i in range(n)]
    try:
        yield streams
    finally:
        for s in streams:
            s.cancel()
        for c in chans:
            c.close()


@contextlib.contextmanager
def stalled_peer():
    """A gRPC WorkerService that accepts Forward streams, reads them and never answers; yields its port."""
    stop = threading.Event()

    class Silent(pb_grpc.WorkerServiceServicer):
        def Forward(self, request_iterator, context):
            for _ in request_iterator:
                stop.wait()  # read the first request, then say nothing
                return
            yield from ()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_WorkerServiceServicer_to_server(Silent(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        stop.set()
        server.stop(0)


class Pinger:
    """Pings ``port`` every ``every_s`` on a thread; keeps the round trips (None = no answer in ``timeout_s``)."""

    def __init__(self, port: int, every_s: float = 0.2, timeout_s: float = 2.0):
        self.port, self.every_s, self.timeout_s = port, every_s, timeout_s
        self.rtts: list[float | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        s = stub(self.port)
        while not self._stop.wait(self.every_s):
            t0 = time.perf_counter()
            try:
                s.Ping(pb.PingRequest(sent_unix_ns=time.time_ns()), timeout=self.timeout_s)
                self.rtts.append(time.perf_counter() - t0)
            except grpc.RpcError:
                self.rtts.append(None)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
