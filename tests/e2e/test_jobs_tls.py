"""A job on nodes that serve gRPC over TLS, each pinned by the certificate fingerprint published with
its endpoint on chain: activations do not travel in clear, and the answer is the same."""

from __future__ import annotations

import grpc
import pytest

from proto.endpoint import Endpoint
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from proto.types import decode_output
from tessera import requester
from tessera.devcluster import DevCluster

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"
TOKENS = 4


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    with DevCluster(tmp_path_factory.mktemp("tls"), model="smollm2-135m", copies=1, tls=True) as c:
        c.start()
        yield c


def test_a_job_over_tls_settles_with_the_transformers_answer(tls_cluster, reference_tokens):
    c = tls_cluster
    cl = c.client()
    for node in c.nodes:
        ep = Endpoint.parse(cl.get_node(node.address).endpoint)
        assert ep.fingerprint is not None  # registered with its certificate's fingerprint
        with grpc.insecure_channel(ep.address) as ch, pytest.raises(grpc.RpcError):
            pb_grpc.WorkerServiceStub(ch).Ping(pb.PingRequest(), timeout=2)  # no plaintext gRPC at all
    job = cl.submit_job(c.plan(c.nodes), PROMPT.encode(), TOKENS, 10**16, codec="fp32")
    res = requester.follow(cl, job, timeout_s=300)
    assert res.outcome == "agreed" and res.winners == (0,)
    assert decode_output(res.output) == reference_tokens(c.manifest.directory, PROMPT, TOKENS)
    assert len(res.payouts) == 2  # both hops served, over TLS
