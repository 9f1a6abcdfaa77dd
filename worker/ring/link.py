"""Outbound side of a hop: one Forward stream to the next hop, and message builders.

Every wait on the next hop has a deadline: each answer within ``timeout_s`` (a
watchdog thread cancels the stream of a peer that stays silent longer), the
whole stream within the job's deadline (gRPC's own), and the connection is
kept alive with HTTP/2 pings so a vanished host is noticed too.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Sequence

import grpc
import torch
from eth_hash.auto import keccak

from proto.channel import open_channel
from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker import codec, wire
from worker.ring.batch import BatchLink, Coalescer
from worker.ring.outbound import Outbound, PeerTimeout, check_reply
from worker.signing import verify
from worker.stage import Activation

logger = logging.getLogger(__name__)

EXTRAS_TAG = b"tessera.v1.extras"  # domain of the payload hash of a step that carries extra activations
KEEPALIVE = [("grpc.keepalive_time_ms", 20_000), ("grpc.keepalive_timeout_ms", 10_000),
             ("grpc.http2.max_pings_without_data", 0)]  # ping a quiet connection every 20 s; 10 s to answer


class Channels:
    """gRPC channels by endpoint, shared by every session of a process."""

    def __init__(self, max_message_bytes: int = 64 << 20):
        self._opts = [("grpc.max_send_message_length", max_message_bytes),
                      ("grpc.max_receive_message_length", max_message_bytes),
                      # a restarted peer is reachable again within ~1 s, not after gRPC's 120 s backoff
                      ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
                      ("grpc.max_reconnect_backoff_ms", 1000), *KEEPALIVE]
        self._lock = threading.Lock()
        self._stubs: dict[str, pb_grpc.WorkerServiceStub] = {}
        self._channels: list[grpc.Channel] = []
        self._coalescers: dict[tuple[str, str], Coalescer] = {}  # (endpoint, node) -> its batches

    def stub(self, endpoint: str) -> pb_grpc.WorkerServiceStub:
        with self._lock:
            return self._stub_locked(endpoint)

    def _stub_locked(self, endpoint: str) -> pb_grpc.WorkerServiceStub:
        if endpoint not in self._stubs:
            ch = open_channel(endpoint, self._opts)  # plaintext, or TLS pinned to the registered cert
            self._channels.append(ch)
            self._stubs[endpoint] = pb_grpc.WorkerServiceStub(ch)
        return self._stubs[endpoint]

    def coalescer(self, endpoint: str, node: str) -> Coalescer:
        """The batches of this process to ``node`` at ``endpoint`` (:class:`worker.ring.batch.Coalescer`)."""
        with self._lock:
            c = self._coalescers.get((endpoint, node))
            if c is None:
                c = self._coalescers[(endpoint, node)] = Coalescer(BatchLink(self._stub_locked(endpoint), node))
            return c

    def close(self) -> None:
        with self._lock:
            coalescers = list(self._coalescers.values())
            self._coalescers.clear()
        for c in coalescers:
            c.link.close()
        with self._lock:
            for ch in self._channels:
                ch.close()
            self._channels.clear()
            self._stubs.clear()


class Link(Outbound):
    """A Forward stream to the next hop, carrying one session; ``call`` sends one message and
    returns its answer.

    Answers are checked: signed by ``peer`` (the planned successor) under ``domain``, upstream,
    naming the same job, replica, step and session nonce (:attr:`nonce`, drawn here), and within
    ``timeout_s`` of the request. ``deadline``: unix time, seconds, when the whole stream ends.
    """

    def __init__(self, stub: pb_grpc.WorkerServiceStub, peer: str, timeout_s: float, domain: bytes,
                 deadline: float | None = None):
        super().__init__(peer, timeout_s)
        self.domain = domain
        self.nonce = os.urandom(wire.NONCE_BYTES)
        remaining = None if deadline is None else deadline - time.time()
        if remaining is not None and remaining <= 0:
            raise PeerTimeout(f"the job's deadline has passed; not opening a stream to {peer}")
        self._start(stub.Forward(self._requests(), timeout=remaining))

    def call(self, msg: pb.HopMessage) -> pb.HopMessage:
        """Send ``msg``; return the answer once its signature is checked."""
        resp = self.exchange(msg)
        verify(resp, self.peer, self.domain)
        return resp

    def exchange(self, msg: pb.HopMessage) -> pb.HopMessage:
        """Send ``msg``; return the answer with its signature NOT yet checked (the caller
        checks it, e.g. with a ``PendingCheck``), everything else checked."""
        try:
            resp = self.send(msg)
        except (grpc.RpcError, StopIteration) as exc:
            raise self.refused(exc, msg.step) from None
        return check_reply(resp, msg, self.peer, self.nonce)

    def close(self, wait: bool = True) -> None:
        """End the stream; waits at most ``timeout_s`` for the next hop to end it too. ``wait=False``
        (the session's CLOSE was answered: nothing more can come) cancels it instead, so a CLOSE
        costs one trip through the ring, not two more waits for each hop's stream to end."""
        self._end()
        if not wait:
            self._responses.cancel()
            return
        self._due = time.monotonic() + self.timeout_s
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError:
            pass
        finally:
            self._due = None


def message(job_id: int, replica: int, hop: int, step: int, kind: int, *, upstream: bool = False,
            payload: codec.Encoded | None = None, ids=(), output: bytes = b"", session: bytes = b"",
            sent_unix_ms: int = 0, extras: Sequence[codec.Encoded] = (), route: int = 0) -> pb.HopMessage:
    """An unsigned hop message of the session ``session``; ``extras``: further tensors crossing the cut;
    ``route``: an OPEN's servedMask."""
    msg = pb.HopMessage(job_id=str(job_id), replica=replica, hop=hop, step=step, kind=kind,
                        upstream=upstream, ids=list(ids), output=output, session=session,
                        sent_unix_ms=sent_unix_ms, route=route)
    if payload is not None:
        msg.payload.CopyFrom(_tensor(payload))
        msg.extras.extend(_tensor(e) for e in extras)
        msg.payload_hash = payload_digest(payload, extras)
    return msg


def _tensor(enc: codec.Encoded) -> pb.Tensor:
    return pb.Tensor(codec=enc.codec, shape=list(enc.shape), block=enc.block, data=enc.data)


def encoded(t: pb.Tensor) -> codec.Encoded:
    return codec.Encoded(t.codec, tuple(int(s) for s in t.shape), t.block, t.data)


def payload_digest(payload: codec.Encoded, extras: Sequence[codec.Encoded] = ()) -> bytes:
    """A step's ``payload_hash``: the payload's digest alone, or with extras
    ``keccak(EXTRAS_TAG || u32be(count) || digest(payload) || digest(extra_0) || ...)``."""
    if not extras:
        return payload.digest()
    return keccak(EXTRAS_TAG + struct.pack(">I", len(extras)) + payload.digest()
                  + b"".join(e.digest() for e in extras))


def payload_of(msg: pb.HopMessage, max_bytes: int) -> Activation:
    """Decode and hash-check a request's activations (CodecError / ProtocolError): one tensor, or
    ``(payload, *extras)`` when tensors skip across the cut."""
    if not msg.HasField("payload"):
        raise ProtocolError(f"step {msg.step} carries no activations")
    enc, extras = encoded(msg.payload), [encoded(e) for e in msg.extras]
    if payload_digest(enc, extras) != msg.payload_hash:
        raise ProtocolError(f"payload hash of step {msg.step} does not match its contents")
    x = codec.decode(enc, max_bytes=max_bytes)
    if not extras:
        return x
    return (x, *(codec.decode(e, max_bytes=max_bytes) for e in extras))


def encode_activation(y: Activation, codec_id: int, block: int) -> tuple[codec.Encoded, list[codec.Encoded]]:
    """The payload and extras of a stage's output ``y`` (one tensor or a tuple, primary first)."""
    first, *rest = y if isinstance(y, tuple) else (y,)
    return codec.encode(first, codec_id, block), [codec.encode(t, codec_id, block) for t in rest]


def corrupt(x: Activation, noise: float, step: int) -> Activation:
    """Byzantine mode: add seeded Gaussian noise to the primary tensor (deterministic, for demos and tests)."""
    if isinstance(x, tuple):
        return (corrupt(x[0], noise, step), *x[1:])
    g = torch.Generator().manual_seed(1_000_003 + step)
    return x + noise * torch.randn(x.shape, generator=g).to(x.device, x.dtype)
