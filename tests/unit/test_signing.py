"""Hop messages: signatures, planned predecessors and step order (no network)."""

from __future__ import annotations

import os
import time

import pytest
import torch
from eth_account import Account

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId, NodeId, decode_output, output_hash
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView
from worker.ring import HopRuntime, Stream
from worker.ring.link import message
from worker.signing import Signer, digest, recover, verify
from worker.stage import StageSpec
from worker.verify.receipt import ReceiptRecorder, receipts_root
from worker.verify.signed import check_replica, sign
from worker.wire import ZERO_ADDRESS, domain_separator

KEYS = ["0x" + f"{i + 11:064x}" for i in range(4)]
ADDR = [Account.from_key(k).address for k in KEYS]
DOMAIN = domain_separator(0, ZERO_ADDRESS)  # StaticPlanView's default
SESSION = b"\x5e" * 32


class LinearTail:
    """A stateless tail stage over blocks [2, 4): logits = x @ W."""

    spec = StageSpec("toy", 4, 2, 4, "causal-lm")
    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self):
        self.w = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))

    def new_cache(self):
        return []

    def cache_len(self, cache):
        return len(cache)

    def cache_bytes(self, cache):
        return 4 * len(cache)

    def forward(self, x, cache=None, *, last=False):
        cache.extend(range(x.shape[1]))
        return x @ self.w


@pytest.fixture
def tail():
    hops = (HopRoute(NodeId(ADDR[0]), "-", 0, 1), HopRoute(NodeId(ADDR[1]), "-", 1, 2),
            HopRoute(NodeId(ADDR[2]), "-", 2, 4))
    route = JobRoute(JobId(7), "toy", 4, (hops,), GenParams(max_tokens=3, codec=codec.FP32))
    outputs = []
    rt = HopRuntime(WorkerConfig(), LinearTail(), StaticPlanView([route]), Signer(KEYS[2]),
                    on_output=lambda *a: outputs.append(a))
    rt.outputs = outputs
    return rt


def _sent(step, rows=1):
    """What hop 1 sends at ``step`` in these tests (its receipt must describe it)."""
    return torch.randn(1, rows, 8, generator=torch.Generator().manual_seed(step))


def _step(step, key=KEYS[1], hop=1, job=7, session=SESSION, rows=1):
    x = _sent(step, rows)
    return Signer(key).sign(message(job, 0, hop, step, pb.KIND_STEP, payload=codec.encode(x, codec.FP32),
                                    session=session), DOMAIN)


def _open(key=KEYS[1], hop=1, job=7, session=None, sent_ms=None):
    return Signer(key).sign(message(job, 0, hop, 0, pb.KIND_OPEN, session=session or os.urandom(32),
                                    sent_unix_ms=sent_ms or time.time_ns() // 10**6), DOMAIN)


def _close(step, key=KEYS[1], session=SESSION, receipts=()):
    msg = message(7, 0, 1, step, pb.KIND_CLOSE, session=session)
    msg.receipts.extend(r.to_pb() for r in receipts)
    return Signer(key).sign(msg, DOMAIN)


def test_signature_recovers_the_sender_and_covers_every_field():
    msg = _step(0)
    assert recover(msg, DOMAIN) == ADDR[1]
    for field, value in [("step", 1), ("hop", 2), ("replica", 1), ("job_id", "8"), ("upstream", True),
                         ("payload_hash", b"\1" * 32), ("output", b"x"), ("error", "e"), ("session", b"\2" * 32),
                         ("sent_unix_ms", 5)]:
        edited = pb.HopMessage()
        edited.CopyFrom(msg)
        setattr(edited, field, value)
        with pytest.raises(ProtocolError):
            verify(edited, ADDR[1], DOMAIN)
    edited = pb.HopMessage()
    edited.CopyFrom(msg)
    edited.ids.append(3)
    assert digest(edited, DOMAIN) != digest(msg, DOMAIN)


def test_unsigned_or_foreign_signatures_are_refused():
    msg = _step(0)
    with pytest.raises(ProtocolError, match="plan names"):
        verify(msg, ADDR[0], DOMAIN)
    msg.ClearField("signature")
    with pytest.raises(ProtocolError, match="unsigned"):
        verify(msg, ADDR[1], DOMAIN)


def test_signatures_are_standard_personal_sign_signatures():
    from eth_account.messages import encode_defunct

    msg = _step(0)
    d = digest(msg, DOMAIN)
    assert Account.recover_message(encode_defunct(primitive=d), signature=msg.signature) == ADDR[1]
    # byte for byte what eth-account signs (same RFC 6979 nonce, low s)
    assert Account.sign_message(encode_defunct(primitive=d), KEYS[1]).signature == msg.signature


@pytest.mark.parametrize("seed", range(12))
def test_digest_is_the_abi_encoding_eth_abi_gives(seed):
    """The hand-written encoder in ``digest`` equals eth_abi's ``abi.encode`` of the same values."""
    import random

    from eth_abi import encode as abi_encode
    from eth_hash.auto import keccak

    from worker.signing import TYPES

    rnd = random.Random(seed)
    domain = domain_separator(rnd.getrandbits(64), "0x" + rnd.randbytes(20).hex())
    msg = pb.HopMessage(job_id=str(rnd.choice([0, 7, 2**256 - 1, rnd.getrandbits(200)])),
                        replica=rnd.getrandbits(32), hop=rnd.getrandbits(8), step=rnd.getrandbits(32),
                        kind=rnd.choice([pb.KIND_OPEN, pb.KIND_STEP, pb.KIND_CLOSE]), upstream=rnd.random() < 0.5,
                        payload_hash=rnd.randbytes(32) if rnd.random() < 0.5 else b"",
                        ids=[rnd.getrandbits(32) for _ in range(rnd.randrange(4))],
                        output=rnd.randbytes(rnd.randrange(40)), error=rnd.choice(["", "boom", "é"]),
                        sender=ADDR[seed % 4].lower() if seed % 2 else ADDR[seed % 4],
                        session=rnd.randbytes(32) if rnd.random() < 0.5 else b"", sent_unix_ms=rnd.getrandbits(64),
                        route=rnd.getrandbits(64) if rnd.random() < 0.5 else 0)
    values = [domain, int(msg.job_id), msg.replica, msg.hop, msg.step, int(msg.kind), msg.upstream,
              msg.payload_hash or b"\x00" * 32, list(msg.ids), keccak(msg.output), keccak(msg.error.encode()),
              ADDR[seed % 4], msg.session or b"\x00" * 32, msg.sent_unix_ms, msg.route]
    assert digest(msg, domain) == keccak(abi_encode(TYPES, values))


@pytest.mark.parametrize("sender", ["", "0x1234", "1" * 42, "0x" + "zz" * 20])
def test_a_malformed_sender_is_refused(sender):
    msg = _step(0)
    msg.sender = sender
    with pytest.raises(ProtocolError, match="not a 0x-prefixed"):
        verify(msg, ADDR[1], DOMAIN)


def test_tail_accepts_its_predecessor_and_answers_signed_tokens(tail):
    assert tail.handle(_open(session=SESSION)).kind == pb.KIND_OPEN
    ids = []
    for t in range(3):
        resp = tail.handle(_step(t))
        verify(resp, ADDR[2], DOMAIN)
        assert resp.upstream and resp.step == t and len(resp.ids) == 1 and resp.session == SESSION
        ids += list(resp.ids)
    assert decode_output(resp.output) == ids
    assert tail.outputs == []  # delivered (and committed by a node) only with the receipts, on CLOSE
    upstream = _upstream_receipts(ids)
    tail.handle(_close(3, receipts=upstream))
    ((job, replica, output, mask, signed),) = tail.outputs
    assert (job, replica, output, mask) == (7, 0, resp.output, 0b111)  # served by the three primaries
    assert [s.receipt.node for s in signed] == ADDR[:3] and list(signed[:2]) == upstream
    assert signed[2].signer(DOMAIN) == ADDR[2] and signed[2].receipt.output_hash == output_hash(output)
    assert receipts_root([s.receipt for s in signed]) == check_replica(
        signed, tail.planview.route(JobId(7), ADDR[1]).replicas[0], 7, 0, output_hash(output), 3, DOMAIN)


@pytest.mark.parametrize("bad", ["signed-by-another", "other-output", "missing", "not-what-was-sent"])
def test_a_close_with_a_bad_upstream_receipt_delivers_nothing(tail, bad):
    tail.handle(_open(session=SESSION))
    ids = [tail.handle(_step(t)).ids[0] for t in range(3)]
    upstream = _upstream_receipts(ids if bad != "other-output" else [ids[0], ids[1], ids[2] + 1],
                                  sent=(lambda t: _sent(t) * 1.01) if bad == "not-what-was-sent" else _sent)
    if bad == "signed-by-another":
        upstream[1] = sign(upstream[1].receipt.__class__(**{**upstream[1].receipt.__dict__, "node": ADDR[3]}),
                           Signer(KEYS[3]), DOMAIN)
    if bad == "missing":
        upstream = upstream[:1]
    with pytest.raises(ProtocolError):
        tail.handle(_close(3, receipts=upstream))
    assert tail.outputs == []


def _upstream_receipts(ids, sent=_sent):
    """Signed receipts of hops 0 and 1 of job 7 over three steps (hop 0's activations made up, hop 1's
    what ``_step`` sent: the tail holds its predecessor's receipt against what arrived)."""
    out = []
    for hop, (start, end) in enumerate([(0, 1), (1, 2)]):
        rec = ReceiptRecorder(JobId(7), 0, hop, NodeId(ADDR[hop]), start, end)
        for t in range(3):
            rec.add(t, sent(t) if hop == 1 else torch.randn(1, 4 if t == 0 else 1, 8))
            rec.seal(ids[: t + 1])
        out.append(sign(rec.receipt(ids), Signer(KEYS[hop]), DOMAIN))
    return out


def test_wrong_key_is_refused(tail):
    with pytest.raises(ProtocolError, match="plan names"):
        tail.handle(_open(key=KEYS[3]))


def test_a_planned_node_that_is_not_the_predecessor_is_refused(tail):
    with pytest.raises(ProtocolError, match="accepts only hop 1"):
        tail.handle(_open(key=KEYS[0], hop=0))  # the head skipping hop 1
    with pytest.raises(ProtocolError, match="plan names"):
        tail.handle(_open(key=KEYS[0], hop=1))  # the head claiming to be hop 1


def test_unknown_job_is_refused(tail):
    with pytest.raises(ProtocolError, match="not in the plan"):
        tail.handle(_open(job=8))


def test_replayed_and_out_of_order_steps_are_refused_and_end_the_session(tail):
    tail.handle(_open(session=SESSION))
    first = _step(0)
    tail.handle(first)
    with pytest.raises(ProtocolError, match="replayed or out of order"):
        tail.handle(first)
    assert len(tail.sessions) == 0
    tail.handle(_open(session=b"\1" * 32))
    with pytest.raises(ProtocolError, match="replayed or out of order"):
        tail.handle(_step(2, session=b"\1" * 32))


def test_payload_that_does_not_match_its_hash_is_refused(tail):
    tail.handle(_open(session=SESSION))
    msg = _step(0)
    msg.payload.data = codec.encode(torch.zeros(1, 1, 8), codec.FP32).data  # swapped after signing
    with pytest.raises(ProtocolError, match="payload hash"):
        tail.handle(msg)


def test_a_session_takes_steps_only_from_the_stream_that_opened_it(tail):
    mine, other = Stream(), Stream()
    tail.handle(_open(session=SESSION), mine)
    assert mine.session.key == (7, 0)
    with pytest.raises(ProtocolError, match="no session opened on this stream"):
        tail.handle(_step(0), other)
    assert len(tail.handle(_step(0), mine).ids) == 1  # the owner's session did not move
    tail.handle(_close(1), mine)
    assert mine.session is None and len(tail.sessions) == 0


@pytest.mark.parametrize("also_malformed", [False, True])
def test_on_a_stream_a_forged_step_is_refused_as_forged(tail, also_malformed):
    """The signature is checked while the stage runs; nothing is answered and the refusal names the forgery."""
    stream = Stream()
    tail.handle(_open(session=SESSION), stream)
    forged = _step(0, key=KEYS[0])  # the head, signing as itself, skipping hop 1
    if also_malformed:
        forged.payload.shape[:] = [1, 1, 9]  # would be a codec error on its own
    with pytest.raises(ProtocolError, match="plan names"):
        tail.handle(forged, stream)
    assert tail.outputs == []


def test_steps_past_max_tokens_are_refused(tail):
    tail.handle(_open(session=SESSION))
    for t in range(3):
        tail.handle(_step(t))
    with pytest.raises(ProtocolError, match="past the job's last step 2"):
        tail.handle(_step(3))


def test_a_classifier_tail_answers_the_argmax_class_of_every_image():
    hops = (HopRoute(NodeId(ADDR[1]), "-", 0, 2), HopRoute(NodeId(ADDR[2]), "-", 2, 4))
    route = JobRoute(JobId(9), "toy", 4, (hops,), GenParams(codec=codec.FP32), kind="classifier")
    outputs = []
    rt = HopRuntime(WorkerConfig(), LinearTail(), StaticPlanView([route]), Signer(KEYS[2]),
                    on_output=lambda *a: outputs.append(a))
    x = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(5))  # 3 images' features
    rt.handle(_open(hop=0, job=9, session=SESSION))
    resp = rt.handle(Signer(KEYS[1]).sign(message(9, 0, 0, 0, pb.KIND_STEP, payload=codec.encode(x, codec.FP32),
                                                  session=SESSION), DOMAIN))
    want = (x @ LinearTail().w)[:, -1].argmax(-1).tolist()
    assert list(resp.ids) == want and decode_output(resp.output) == want
    assert outputs == []
    rt.handle(Signer(KEYS[1]).sign(message(9, 0, 0, 1, pb.KIND_CLOSE, session=SESSION), DOMAIN))
    assert outputs == [(9, 0, resp.output, 0b11, ())]  # a classifier's one step keeps no receipts
