"""Extra activations (tensors that skip across a cut): hashed with the payload, signed, bounded, and
handed to the stage as ``(payload, *extras)`` (no network)."""

from __future__ import annotations

import os
import time

import pytest
import torch
from eth_account import Account

from proto.errors import CodecError, ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId, NodeId
from worker import codec, wire
from worker.config import WorkerConfig
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView
from worker.ring import HopRuntime
from worker.ring.link import message, payload_digest, payload_of
from worker.signing import Signer
from worker.stage import StageSpec

KEYS = ["0x" + f"{i + 51:064x}" for i in range(2)]
ADDR = [Account.from_key(k).address for k in KEYS]
DOMAIN = wire.domain_separator(0, wire.ZERO_ADDRESS)
SESSION = b"\x7a" * 32


class SkipTail:
    """A classifier tail over blocks [1, 2) whose input is (x, skip): logits = (x + skip) @ W."""

    spec = StageSpec("toy", 2, 1, 2, "classifier")
    device, dtype = torch.device("cpu"), torch.float32
    w = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))

    def new_cache(self):
        return None

    def cache_bytes(self, cache):
        return 0

    def forward(self, x, cache=None, *, last=False):
        a, skip = x
        return (a + skip) @ self.w


def _runtime(kind: str = "classifier") -> HopRuntime:
    hops = (HopRoute(NodeId(ADDR[0]), "-", 0, 1), HopRoute(NodeId(ADDR[1]), "-", 1, 2))
    route = JobRoute(JobId(3), "toy", 2, (hops,), GenParams(codec=codec.FP32), kind=kind)
    rt = HopRuntime(WorkerConfig(), SkipTail(), StaticPlanView([route]), Signer(KEYS[1]))
    rt.handle(Signer(KEYS[0]).sign(message(3, 0, 0, 0, pb.KIND_OPEN, session=SESSION,
                                           sent_unix_ms=time.time_ns() // 10**6), DOMAIN))
    return rt


def _tensors(n: int = 1):
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 8, generator=g), [torch.randn(4, 8, generator=g) for _ in range(n)]


def _step(x, extras, cid=codec.FP32, sign=True) -> pb.HopMessage:
    msg = message(3, 0, 0, 0, pb.KIND_STEP, payload=codec.encode(x, codec.FP32),
                  extras=[codec.encode(e, cid) for e in extras], session=SESSION)
    return Signer(KEYS[0]).sign(msg, DOMAIN) if sign else msg


def test_extras_reach_the_stage_and_the_tail_answers_from_them():
    x, (skip,) = _tensors()
    resp = _runtime().handle(_step(x, [skip]))
    assert list(resp.ids) == ((x + skip) @ SkipTail.w).argmax(-1).tolist()


def test_the_payload_hash_covers_every_extra_and_the_signature_covers_the_hash():
    x, (skip,) = _tensors()
    msg = _step(x, [skip])
    assert msg.payload_hash == payload_digest(codec.encode(x, codec.FP32), [codec.encode(skip, codec.FP32)])
    assert msg.payload_hash != codec.encode(x, codec.FP32).digest()  # a payload alone hashes as before
    swapped = pb.HopMessage()
    swapped.CopyFrom(msg)
    swapped.extras[0].data = codec.encode(torch.zeros(4, 8), codec.FP32).data
    with pytest.raises(ProtocolError, match="payload hash"):
        payload_of(swapped, 1 << 20)
    dropped = pb.HopMessage()
    dropped.CopyFrom(msg)
    del dropped.extras[:]
    with pytest.raises(ProtocolError, match="payload hash"):
        payload_of(dropped, 1 << 20)
    rehashed = pb.HopMessage()
    rehashed.CopyFrom(swapped)
    rehashed.payload_hash = payload_digest(codec.encode(x, codec.FP32), [codec.encode(torch.zeros(4, 8), codec.FP32)])
    with pytest.raises(ProtocolError, match="plan names|signed by"):
        _runtime().handle(rehashed)  # consistent hash, but the signature was over the old one
    got = payload_of(msg, 1 << 20)
    assert isinstance(got, tuple) and torch.equal(got[0], x) and torch.equal(got[1], skip)


def test_extras_are_bounded_and_refused_where_they_do_not_belong():
    x, extras = _tensors(wire.MAX_EXTRAS + 1)
    with pytest.raises(wire.MessageError, match="17 extra activations; at most 16"):
        wire.check_request(_step(x, extras), 1 << 20)
    x, extras = _tensors(3)
    with pytest.raises(wire.MessageError, match="payload of 512 bytes exceeds this node's limit of 500"):
        wire.check_request(_step(x, extras), 500)  # each tensor fits, all four do not
    bad = _step(x, extras[:1])
    bad.extras[0].shape[:] = []
    with pytest.raises(wire.MessageError, match="extra activation 0 shape"):
        wire.check_request(bad, 1 << 20)
    opened = Signer(KEYS[0]).sign(message(3, 0, 0, 0, pb.KIND_OPEN, session=os.urandom(32)), DOMAIN)
    opened.extras.add(codec=0, shape=[1], block=64, data=b"\0" * 4)
    with pytest.raises(wire.MessageError, match="only STEP messages carry activations"):
        wire.check_request(opened, 1 << 20)
    answer = message(3, 0, 1, 0, pb.KIND_STEP, upstream=True, ids=[1], session=SESSION)
    Signer(KEYS[1]).sign(answer, DOMAIN)
    answer.extras.add(codec=0, shape=[1], block=64, data=b"\0" * 4)
    with pytest.raises(wire.MessageError, match="carries extra activations"):
        wire.check_answer(answer)


def test_extras_must_be_in_the_jobs_codec_and_a_language_model_takes_none():
    x, (skip,) = _tensors()
    with pytest.raises(CodecError, match="codec 1 block 64; the job's plan names codec 0"):
        _runtime().handle(_step(x, [skip], cid=codec.FP16))
    with pytest.raises(CodecError, match="a language model's hops pass one tensor"):
        _runtime("causal-lm").handle(_step(x.view(1, 4, 8), [skip]))
