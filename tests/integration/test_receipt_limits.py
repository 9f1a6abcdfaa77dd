"""GetReceipts under a flood, on a real worker's gRPC server on 127.0.0.1: one peer host that
floods is refused on its own allowance while a verifier on another host is still served.

Every loopback client has the address 127.0.0.1, so the second peer reaches the server through
a small TCP relay whose outgoing socket is bound to 127.0.0.2: the server sees a second host, and
the production key (the peer's IP, without its port) is what the test exercises."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker import server as wserver
from worker.config import WorkerConfig
from worker.planview import StaticPlanView
from worker.signing import Signer

sys.path.insert(0, str(Path(__file__).parent))
from peers import KEYS, head_stage  # noqa: E402

pytestmark = pytest.mark.integration
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture()
def worker():
    """A worker serving the tiny model's head span; every replica's receipts are an empty list."""
    running = wserver.start(WorkerConfig(host="127.0.0.1", port=0), head_stage(), StaticPlanView([]),
                            signer=Signer(KEYS[0]))
    running.runtime.receipts = lambda job, replica: []
    try:
        yield running
    finally:
        running.stop(0)


@contextlib.contextmanager
def relay_from(source_ip: str, target_port: int):
    """A TCP relay on 127.0.0.1 whose connections reach 127.0.0.1:``target_port`` from ``source_ip``;
    yields its port; stops (sockets closed) on exit."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(0.2)
    stop, socks = threading.Event(), []

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(1 << 16):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = lsock.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=5, source_address=(source_ip, 0))
            upstream.settimeout(None)
            socks.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield lsock.getsockname()[1]
    finally:
        stop.set()
        t.join(2)
        for s in [lsock, *socks]:
            s.close()


def _ask(stub, why: list[str] | None = None) -> grpc.StatusCode:
    """One GetReceipts call's status; a refusal's message is appended to ``why``."""
    try:
        stub.GetReceipts(pb.ReceiptsRequest(job_id="1", replica=0), timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        if why is not None:
            why.append(exc.details())
        return exc.code()


def test_a_flooding_peer_is_refused_while_a_verifier_on_another_host_is_served(worker):
    flood, why, stop = [], [], threading.Event()

    def hammer() -> None:  # one host asking as fast as it can, for the whole test
        with grpc.insecure_channel(f"127.0.0.1:{worker.port}") as ch:
            stub = pb_grpc.WorkerServiceStub(ch)
            while not stop.is_set():
                flood.append(_ask(stub, why if len(why) < 5 else None))

    t0 = time.monotonic()
    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    try:
        while len(flood) < 3 * wserver.RECEIPT_REQUESTS_PER_S:  # past the global cap: the old code refused all
            assert t.is_alive() and time.monotonic() - t0 < 30
            time.sleep(0.05)
        with relay_from("127.0.0.2", worker.port) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            verifier = [_ask(pb_grpc.WorkerServiceStub(ch)) for _ in range(3)]
        with grpc.insecure_channel(f"127.0.0.1:{worker.port}") as ch:  # same host, another port: same allowance
            again = _ask(pb_grpc.WorkerServiceStub(ch))
    finally:
        stop.set()
        t.join(10)
    took = time.monotonic() - t0
    assert verifier == [grpc.StatusCode.OK] * 3
    assert again == EXHAUSTED
    burst = wserver.RECEIPT_BURST_PER_PEER
    assert flood[:burst] == [grpc.StatusCode.OK] * burst
    assert set(flood) == {grpc.StatusCode.OK, EXHAUSTED}
    assert "from one peer and ipv4:127.0.0.1 sent more" in why[0], why
    assert flood.count(grpc.StatusCode.OK) <= burst + wserver.RECEIPT_REQUESTS_PER_PEER_S * took + 1, (len(flood), took)
