"""Outbound side of a hop: one Forward stream to the next hop, and message builders."""

from __future__ import annotations

import logging
import queue
import threading

import grpc
import torch

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker import codec
from worker.signing import verify

logger = logging.getLogger(__name__)

_END = object()


class Channels:
    """gRPC channels by endpoint, shared by every session of a process."""

    def __init__(self, max_message_bytes: int = 64 << 20):
        self._opts = [("grpc.max_send_message_length", max_message_bytes),
                      ("grpc.max_receive_message_length", max_message_bytes),
                      # a restarted peer is reachable again within ~1 s, not after gRPC's 120 s backoff
                      ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
                      ("grpc.max_reconnect_backoff_ms", 1000)]
        self._lock = threading.Lock()
        self._stubs: dict[str, pb_grpc.WorkerServiceStub] = {}
        self._channels: list[grpc.Channel] = []

    def stub(self, endpoint: str) -> pb_grpc.WorkerServiceStub:
        with self._lock:
            if endpoint not in self._stubs:
                ch = grpc.insecure_channel(endpoint, options=self._opts)
                self._channels.append(ch)
                self._stubs[endpoint] = pb_grpc.WorkerServiceStub(ch)
            return self._stubs[endpoint]

    def close(self) -> None:
        with self._lock:
            for ch in self._channels:
                ch.close()
            self._channels.clear()
            self._stubs.clear()


class Link:
    """A Forward stream to the next hop; ``call`` sends one message and returns its answer.

    Answers are checked: signed by ``peer`` (the planned successor), upstream,
    and naming the same job, replica and step.
    """

    def __init__(self, stub: pb_grpc.WorkerServiceStub, peer: str, timeout_s: float):
        self.peer, self.timeout_s = peer, timeout_s
        self._q: queue.Queue = queue.Queue()
        self._responses = stub.Forward(self._requests())

    def _requests(self):
        while True:
            item = self._q.get()
            if item is _END:
                return
            yield item

    def call(self, msg: pb.HopMessage) -> pb.HopMessage:
        """Send ``msg``; return the answer once its signature is checked."""
        resp = self.exchange(msg)
        verify(resp, self.peer)
        return resp

    def exchange(self, msg: pb.HopMessage) -> pb.HopMessage:
        """Send ``msg``; return the answer with its signature NOT yet checked (the caller
        checks it, e.g. with a ``PendingCheck``), everything else checked."""
        self._q.put(msg)
        try:
            resp = next(self._responses)
        except StopIteration:
            raise ProtocolError(f"next hop {self.peer} closed the stream") from None
        except grpc.RpcError as exc:
            raise ProtocolError(f"next hop {self.peer} refused step {msg.step}: "
                                f"{exc.code().name} {exc.details()}") from None
        if not resp.upstream or resp.job_id != msg.job_id or resp.replica != msg.replica \
                or resp.step != msg.step or resp.kind != msg.kind:
            raise ProtocolError(f"next hop {self.peer} answered step {resp.step} kind {resp.kind} "
                                f"to step {msg.step} kind {msg.kind}")
        if resp.error:
            raise ProtocolError(f"next hop {self.peer} failed: {resp.error}")
        return resp

    def close(self) -> None:
        self._q.put(_END)
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError:
            pass


def message(job_id: int, replica: int, hop: int, step: int, kind: int, *, upstream: bool = False,
            payload: codec.Encoded | None = None, ids=(), output: bytes = b"") -> pb.HopMessage:
    """An unsigned hop message."""
    msg = pb.HopMessage(job_id=str(job_id), replica=replica, hop=hop, step=step, kind=kind,
                        upstream=upstream, ids=list(ids), output=output)
    if payload is not None:
        msg.payload.CopyFrom(pb.Tensor(codec=payload.codec, shape=list(payload.shape),
                                       block=payload.block, data=payload.data))
        msg.payload_hash = payload.digest()
    return msg


def payload_of(msg: pb.HopMessage, max_bytes: int) -> torch.Tensor:
    """Decode and hash-check a request's activations (CodecError / ProtocolError)."""
    if not msg.HasField("payload"):
        raise ProtocolError(f"step {msg.step} carries no activations")
    p = msg.payload
    enc = codec.Encoded(p.codec, tuple(int(s) for s in p.shape), p.block, p.data)
    if enc.digest() != msg.payload_hash:
        raise ProtocolError(f"payload hash of step {msg.step} does not match its contents")
    return codec.decode(enc, max_bytes=max_bytes)


def corrupt(x: torch.Tensor, noise: float, step: int) -> torch.Tensor:
    """Byzantine mode: add seeded Gaussian noise (deterministic, for demos and tests)."""
    g = torch.Generator().manual_seed(1_000_003 + step)
    return x + noise * torch.randn(x.shape, generator=g).to(x.device, x.dtype)
