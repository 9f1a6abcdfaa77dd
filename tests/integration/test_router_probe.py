"""The real gRPC prober measures a worker on loopback; a dead endpoint drops out."""

from __future__ import annotations

import time
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest

from chain.devnet import free_port as _free_port
from proto.tessera.v1 import worker_pb2, worker_pb2_grpc
from router.plan import plan_replicas
from router.view import NetworkView, grpc_prober

pytestmark = pytest.mark.integration


class FakeWorker(worker_pb2_grpc.WorkerServiceServicer):
    def Info(self, request, context):
        return worker_pb2.InfoResponse(model="m", num_blocks=4, start=0, end=4, tokens_per_second=25.0,
                                       free_cache_bytes=123456)

    def Ping(self, request, context):
        return worker_pb2.PingResponse(sent_unix_ns=request.sent_unix_ns, received_unix_ns=time.time_ns())


@dataclass(frozen=True)
class Rec:
    node: str
    endpoint: str
    start: int = 0
    end: int = 4
    stake: int = 10**18
    reputation: float = 1.0
    throughput: int = 10
    price_per_block: int = 0
    active: bool = True




@pytest.fixture()
def worker():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(FakeWorker(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_probe_live_worker_and_drop_dead_one(worker):
    dead = f"127.0.0.1:{_free_port()}"
    recs = [Rec("0x" + "1" * 40, worker), Rec("0x" + "2" * 40, dead)]
    snap = NetworkView(recs, 4, prober=grpc_prober(timeout_s=1.0)).snapshot("m")
    live, gone = snap.nodes
    assert live.alive and 0 < live.latency_ms < 1000
    assert live.throughput == 100.0  # 25 tokens/s measured over 4 blocks
    assert live.free_cache_bytes == 123456
    assert not gone.alive
    assert [h.node for h in plan_replicas(snap, 1).plan.replicas[0].hops] == [recs[0].node]
