"""The verifier role's judgement of one replica around the re-execution: reveals, receipts, roots."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch
from eth_account import Account

from chain.records import Reveal
from proto.errors import ProtocolError
from proto.types import Hop, JobId, NodeId, encode_output, output_hash
from worker.node.book import JobBook, JobEntry
from worker.node.daemon import NodeDaemon
from worker.node.verifier import VerifierRole
from worker.planview import GenParams
from worker.signing import Signer
from worker.verify.receipt import ReceiptRecorder, receipts_root
from worker.verify.signed import pack, sign
from worker.verify.spec import ExecSpec, Verdict
from worker.wire import ZERO_ADDRESS, domain_separator

KEYS = ["0x" + f"{i + 31:064x}" for i in range(2)]
ADDR = [Account.from_key(k).address for k in KEYS]
DOMAIN = domain_separator(0, ZERO_ADDRESS)
TOKENS = [5, 6, 7]
HOPS = (Hop(NodeId(ADDR[0]), 0, 2), Hop(NodeId(ADDR[1]), 2, 4))


class Judge:
    """Stands in for the re-execution: records what it was asked and answers honest."""

    def __init__(self):
        self.calls = []

    def verify(self, spec, prompt, tokens, route, receipts, job, replica):
        self.calls.append((tokens, [h.node for h in route], [r.hop for r in receipts]))
        return SimpleNamespace(verdict=Verdict("honest", reason="ok"), seconds=0.0)


def _signed():
    out = []
    for hop, h in enumerate(HOPS):
        rec = ReceiptRecorder(JobId(9), 0, hop, h.node, h.start, h.end)
        for t in range(len(TOKENS)):
            rec.add(t, torch.randn(1, 2 if t == 0 else 1, 8))
            rec.seal(TOKENS[: t + 1])
        out.append(sign(rec.receipt(TOKENS), Signer(KEYS[hop]), DOMAIN))
    return out


def _judge(reveal, fetched):
    role = VerifierRole(None, SimpleNamespace(domain=DOMAIN), None, ADDR[0], threading.Event())
    role._fetch = lambda *a: fetched
    judge = Judge()
    req = SimpleNamespace(job_id=9)
    verdict = role._replica(req, 0, HOPS, reveal, ExecSpec(GenParams(max_tokens=3)), [1, 2], judge, 0.0)
    role.close()
    return verdict, judge.calls


def _reveal(root: bytes, mask: int = 0b11) -> Reveal:
    out = encode_output(TOKENS)
    return Reveal(0, output_hash(out), out, root, mask)


def test_receipts_matching_the_revealed_root_go_to_the_re_execution():
    signed = _signed()
    verdict, calls = _judge(_reveal(receipts_root([s.receipt for s in signed])), signed)
    assert verdict.status == "honest"
    assert calls == [(TOKENS, ADDR, [0, 1])]


def test_no_reveal_is_unknown_and_costs_no_work():
    verdict, calls = _judge(None, _signed())
    assert verdict.status == "unknown" and calls == []


def test_the_served_mask_picks_the_route_a_standby_served():
    """Words: primary A [0, 2), its standby S [0, 2), tail B [2, 4); S served (mask 0b110)."""
    s_key = "0x" + "77" * 32
    standby = Hop(NodeId(Account.from_key(s_key).address), 0, 2)
    signed = _signed()
    rec = signed[0].receipt.__class__(**{**signed[0].receipt.__dict__, "node": standby.node})
    signed[0] = sign(rec, Signer(s_key), DOMAIN)
    role = VerifierRole(None, SimpleNamespace(domain=DOMAIN), None, ADDR[0], threading.Event())
    role._fetch = lambda *a: signed
    judge = Judge()
    reveal = _reveal(receipts_root([s.receipt for s in signed]), 0b110)
    verdict = role._replica(SimpleNamespace(job_id=9), 0, (HOPS[0], standby, HOPS[1]), reveal,
                            ExecSpec(GenParams(max_tokens=3)), [1, 2], judge, 0.0)
    role.close()
    assert verdict.status == "honest" and judge.calls[0][1] == [standby.node, ADDR[1]]


@pytest.mark.parametrize("case", ["withheld", "other-root", "forged", "short"])
def test_a_tail_whose_receipts_do_not_back_its_commitment_is_the_faulty_hop(case):
    signed = _signed()
    root = receipts_root([s.receipt for s in signed])
    if case == "withheld":
        fetched = None
    elif case == "other-root":
        fetched, root = signed, b"\1" * 32
    elif case == "forged":  # hop 0's receipt signed by the tail's key
        fetched = [sign(signed[0].receipt.__class__(**{**signed[0].receipt.__dict__, "node": ADDR[1]}),
                        Signer(KEYS[1]), DOMAIN), signed[1]]
    else:
        fetched = signed[1:]
    verdict, calls = _judge(_reveal(root), fetched)
    assert (verdict.status, verdict.hop) == ("faulty", 1), verdict
    assert calls == []


def test_a_tail_hands_out_receipts_of_what_it_committed_only_after_the_reveal(tmp_path):
    signed = _signed()
    d = NodeDaemon.__new__(NodeDaemon)
    revealed = {"mask": 0}
    d.book = JobBook(tmp_path)
    d.chain = SimpleNamespace(get_job=lambda j: SimpleNamespace(revealed_mask=revealed["mask"]))
    d.book.add(JobEntry(9, ((0, 1),), (0,), 100, 200, receipts={"0": [pack(s).hex() for s in signed]}))
    with pytest.raises(ProtocolError, match="committed no replica 0"):
        d._receipts_of(9, 0)  # saved, not committed yet
    d.book.update(9, committed=(0,))
    with pytest.raises(ProtocolError, match="not revealed yet"):
        d._receipts_of(9, 0)
    revealed["mask"] = 0b1
    assert d._receipts_of(9, 0) == tuple(signed)
    assert d._root(d.book.get(9), 0) == receipts_root([s.receipt for s in signed])
    with pytest.raises(ProtocolError, match="committed no replica 1"):
        d._receipts_of(9, 1)
