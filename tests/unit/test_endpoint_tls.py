"""gRPC over TLS with the node certificate pinned by the fingerprint registered in its endpoint."""

from __future__ import annotations

import grpc
import pytest

from proto.channel import open_channel
from proto.endpoint import Endpoint, fingerprint
from proto.errors import ConfigError, ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker.node.daemon import check_endpoint
from worker.tls import identity

FP = "ab" * 32


def test_endpoints_parse_with_and_without_a_fingerprint():
    assert Endpoint.parse("203.0.113.7:50051") == Endpoint("203.0.113.7:50051")
    assert Endpoint.parse(f"node.example.org:443#tls={FP.upper()}") == Endpoint("node.example.org:443", FP)
    assert str(Endpoint("h:1", FP)) == f"h:1#tls={FP}"
    for bad in ("h", "h:0", "h:x", ":5", "h:5#tls=12", f"h:5#fp={FP}", "h:5#tls=" + "g" * 64, "h:5" + "x" * 300):
        with pytest.raises(ProtocolError):
            Endpoint.parse(bad)


class _Ping(pb_grpc.WorkerServiceServicer):
    def Ping(self, request, context):
        return pb.PingResponse(sent_unix_ns=request.sent_unix_ns)


@pytest.fixture
def tls_server(tmp_path):
    from concurrent import futures

    key, cert = identity(tmp_path / "tls")
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_WorkerServiceServicer_to_server(_Ping(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    server.start()
    yield port, fingerprint(cert), tmp_path / "tls"
    server.stop(None)


def test_a_peer_talks_to_the_pinned_certificate_only(tls_server):
    port, fp, folder = tls_server
    with open_channel(f"127.0.0.1:{port}#tls={fp}") as ch:
        assert pb_grpc.WorkerServiceStub(ch).Ping(pb.PingRequest(sent_unix_ns=7), timeout=5).sent_unix_ns == 7
    with pytest.raises(ProtocolError, match="refusing to talk to it"):  # another certificate: a man in the middle
        open_channel(f"127.0.0.1:{port}#tls={FP}")
    with open_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError):  # plaintext gets nothing
        pb_grpc.WorkerServiceStub(ch).Ping(pb.PingRequest(sent_unix_ns=7), timeout=2)
    assert identity(folder)[1] == identity(folder)[1]  # made once, reused: the registered pin stays valid
    assert (folder / "key.pem").stat().st_mode & 0o077 == 0  # the key is its owner's alone


def test_the_daemon_serves_what_it_registered():
    check_endpoint(f"203.0.113.7:50051#tls={FP}", 50051, FP)
    with pytest.raises(ConfigError, match="tls = true"):
        check_endpoint(f"203.0.113.7:50051#tls={FP}", 50051, None)
    with pytest.raises(ConfigError, match="register anew with --tls"):
        check_endpoint("203.0.113.7:50051", 50051, FP)
    with pytest.raises(ConfigError, match="fingerprint"):
        check_endpoint(f"203.0.113.7:50051#tls={'cd' * 32}", 50051, FP)
