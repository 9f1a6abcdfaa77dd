"""Chunk fingerprints and hop receipts: compact, canonical, and close only to what was computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eth_abi import encode
from eth_account import Account
from eth_hash.auto import keccak

from proto.errors import ProtocolError
from proto.types import JobId, NodeId
from worker.verify.fingerprint import (
    CHUNK_STEPS,
    Fingerprint,
    K,
    chunk_of,
    chunk_seed,
    chunk_steps,
    compare,
    fingerprint,
    num_chunks,
    positions,
)
from worker.verify.receipt import RECEIPT_TYPEHASH, HopReceipt, ReceiptRecorder, receipts_root

NODE = NodeId(Account.from_key("0x" + "11" * 32).address)


def _chunk(rows: int = 32, cols: int = 576, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    y = g.standard_normal((rows, cols)).astype(np.float32)
    y[:, 7] *= 40  # a massive feature, as real residual streams have
    return y


def test_fingerprint_of_32_tokens_fits_in_300_bytes_and_round_trips():
    fp = fingerprint(_chunk(), chunk_seed(1, 0, 2, 1, list(range(32))))
    data = fp.to_bytes()
    assert len(data) == 11 + 4 * K <= 300
    assert Fingerprint.from_bytes(data) == fp


@pytest.mark.parametrize("bad", [b"", b"\x02" + bytes(10 + 4 * K), bytes.fromhex("01") + bytes(10) + b"\x00"])
def test_malformed_fingerprint_bytes_are_refused(bad):
    with pytest.raises(ProtocolError):
        Fingerprint.from_bytes(bad)


def test_positions_are_deterministic_stratified_and_in_bounds():
    seed = chunk_seed(5, 1, 0, 0, [42])
    r, c = positions(seed, 200, 576)
    r2, c2 = positions(seed, 200, 576)
    assert (r == r2).all() and (c == c2).all()
    assert r.min() >= 0 and r.max() < 200 and c.min() >= 0 and c.max() < 576
    j = np.arange(K)
    assert ((r >= j * 200 // K) & (r < (j + 1) * 200 // K)).all()  # one sample in each row stratum
    r1, _ = positions(seed, 3, 576)
    assert sorted(set(r1.tolist())) == [0, 1, 2]  # few rows: every row sampled
    assert not (positions(chunk_seed(5, 1, 0, 0, [43]), 200, 576)[1] == c).all()  # other tokens, other places


def test_compare_is_zero_on_the_same_values_and_grows_with_the_deviation():
    y, seed = _chunk(), chunk_seed(1, 0, 0, 1, [3] * 32)
    fp = fingerprint(y, seed)
    same = compare(fp, y, seed)
    assert same.median == 0 and same.p90 == 0 and same.shape_ok
    g = np.random.default_rng(9)
    rms = np.sqrt((y.astype(np.float64) ** 2).mean(axis=1, keepdims=True))
    small = compare(fp, y + (1e-4 * rms * g.standard_normal(y.shape)).astype(np.float32), seed)
    big = compare(fp, y + (1e-2 * rms * g.standard_normal(y.shape)).astype(np.float32), seed)
    assert 2e-5 < small.median < 2e-4 and 2e-3 < big.median < 2e-2 and big.p90 > big.median
    assert not compare(fp, y[:-1], seed).shape_ok  # fewer rows than the hop claimed


def test_chunks_are_the_prefill_then_32_steps_each():
    assert [chunk_of(s) for s in (0, 1, 32, 33, 64, 65)] == [0, 1, 1, 2, 2, 3]
    assert list(chunk_steps(0, 40)) == [0] and list(chunk_steps(2, 40)) == list(range(33, 40))
    assert [num_chunks(n) for n in (0, 1, 2, 33, 34)] == [0, 1, 2, 2, 3]
    assert CHUNK_STEPS == 32


def _receipt(**kw) -> HopReceipt:
    fp = fingerprint(_chunk(4, 16), b"s" * 32)
    base = dict(job_id=JobId(7), replica=1, hop=2, node=NODE, start=10, end=20, output_hash=keccak(b"ids"),
                chunks=(fp, fp))
    return HopReceipt(**{**base, **kw})


def test_receipt_round_trips_and_its_digest_binds_every_field():
    r = _receipt()
    assert HopReceipt.from_bytes(r.to_bytes()) == r
    chunks_hash = keccak(b"".join(keccak(c.to_bytes()) for c in r.chunks))
    assert r.digest() == keccak(encode(["bytes32", "uint256", "uint256", "uint256", "address", "uint256", "uint256",
                                        "bytes32", "bytes32"],
                                       [RECEIPT_TYPEHASH, 7, 1, 2, NODE, 10, 20, keccak(b"ids"), chunks_hash]))
    other_fp = fingerprint(_chunk(4, 16, seed=1), b"s" * 32)
    for change in (dict(job_id=JobId(8)), dict(replica=0), dict(hop=1), dict(start=11), dict(end=21),
                   dict(node=NodeId(Account.from_key("0x" + "22" * 32).address)), dict(chunks=(other_fp,) * 2),
                   dict(output_hash=keccak(b"other ids"))):
        assert _receipt(**change).digest() != r.digest()
    assert receipts_root([r, _receipt(hop=3)]) == keccak(r.digest() + _receipt(hop=3).digest())
    with pytest.raises(ProtocolError):
        HopReceipt.from_bytes(r.to_bytes()[:-1])


def test_recorder_seals_a_chunk_only_once_its_tokens_are_known():
    rec = ReceiptRecorder(JobId(3), 0, 1, NODE, 0, 15)
    rec.add(0, torch.randn(1, 5, 16))  # the prefill: 5 prompt rows
    rec.seal([])
    assert rec.chunks == []
    rec.seal([11])
    assert len(rec.chunks) == 1 and rec.chunks[0].rows == 5
    for step in range(1, 35):
        rec.add(step, torch.randn(1, 1, 16))
        rec.seal(list(range(step + 1)))
    assert [c.rows for c in rec.chunks] == [5, 32]  # steps 1..32 sealed; 33, 34 still open
    receipt = rec.receipt(list(range(35)))
    assert [c.rows for c in receipt.chunks] == [5, 32, 2]
    assert receipt.output_hash == keccak(b"".join(i.to_bytes(4, "big") for i in range(35)))
    with pytest.raises(ProtocolError):
        ReceiptRecorder(JobId(3), 0, 1, NODE, 0, 15).add(1, torch.randn(1, 1, 16))  # step 0 missing
