"""The requester library (tessera.requester) and `tessera job result` on a real anvil; the
tails' commits and reveals are sent by hand (no workers), so every outcome can be forced."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from chain.client import TesseraChain
from chain.deploy import save_deployment
from chain.devnet import advance_time
from chain.testing import verifiers
from proto.errors import ContractError, JobError
from proto.types import encode_output
from tessera import requester
from tessera.cli.main import main
from tessera.requester import JobSpec, Planned, Submitted

pytestmark = pytest.mark.integration

FEE = 9 * 10**17
POOL = FEE - FEE // 10  # the fee less the 10% verification reserve
SALT = b"\x05" * 32
OUT = encode_output([11, 22, 33])
BAD = encode_output([11, 22, 34])


def spec(**kw) -> JobSpec:
    return JobSpec(**{"model": "m", "input": b"prompt", "max_tokens": 3, "fee_wei": FEE, "replicas": 3,
                      "commit_window_s": 100, "reveal_window_s": 100, **kw})


def commit_reveal(chain, nodes, job, commits, reveals, outs=(OUT, OUT, OUT)):
    """Tails of replicas ``commits`` commit outs[r]; those of ``reveals`` then reveal it (after the
    commit window when not every replica committed)."""
    for r in commits:
        nodes[3 * r + 2].commit(job, r, outs[r], SALT)
    if len(commits) < 3:
        advance_time(chain.w3, 101)
    for r in reveals:
        nodes[3 * r + 2].reveal(job, r, outs[r], SALT)


def test_run_job_reads_payouts_from_the_chain_event(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    seen = []
    pending = requester.run_job(deployed, spec(fee_wei=FEE + 7), plan=plan, wait=False, on_progress=seen.append)
    assert pending.outcome == "pending" and pending.payouts == {}
    assert [type(u) for u in seen] == [Planned, Submitted] and seen[1].tx_hash == pending.submit_tx
    commit_reveal(deployed, nodes, pending.job_id, (0, 1, 2), (0, 1, 2))
    before = {n.address: n.get_node().earnings for n in nodes}
    nodes[0].finalize(pending.job_id)  # as a tail's daemon does once every replica revealed
    res = requester.follow(deployed, pending.job_id, timeout_s=30)
    assert res.outcome == "agreed" and res.output == OUT and res.winners == (0, 1, 2)
    assert [v.verdict for v in res.replicas()] == ["honest"] * 3
    assert res.text is None  # model "m" is not installed here: the output stays ids
    credited = {n.address: n.get_node().earnings - before[n.address] for n in nodes}
    assert res.payouts == credited and sum(credited.values()) + res.refund == FEE + 7
    assert deployed.w3.eth.get_transaction_receipt(res.finalize_tx)["from"] == nodes[0].address


def test_follow_finalizes_after_the_deadline_and_says_why_it_refunded(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = requester.run_job(deployed, spec(), plan=plan, wait=False).job_id
    advance_time(deployed.w3, 201)  # nobody committed
    res = requester.follow(deployed, job, timeout_s=30)  # finalizes it itself
    assert res.outcome == "refunded" and res.refund == FEE and res.payouts == {}
    assert "none of the 3 replicas revealed an output" in res.reason
    assert [v.verdict for v in res.replicas()] == ["silent"] * 3
    assert deployed.w3.eth.get_transaction_receipt(res.finalize_tx)["from"] == deployed.address
    assert deployed.credits_of() == res.refund == FEE


def test_follow_pushes_a_dispute_to_the_verifiers_verdict(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    pool = {v.address: v for v in verifiers(deployed)}
    job = requester.run_job(deployed, spec(), plan=plan, wait=False).job_id
    commit_reveal(deployed, nodes, job, (0, 1, 2), (0, 1, 2), outs=(OUT, BAD, OUT))
    nodes[0].finalize(job)  # a tail's daemon finalizes: the outputs differ, so it is disputed
    requester.push(deployed, job, 0)  # anyone may draw the verifiers, from the next block
    for v in deployed.verifiers_of(job):
        pool[v].attest(job, [1, 2, 1])  # replica 1: its first served hop is faulty
    res = requester.follow(deployed, job, timeout_s=30)
    assert res.outcome == "verified" and res.winners == (0, 2) and res.output == OUT
    views = res.replicas()
    assert [v.verdict for v in views] == ["honest", "faulty", "honest"]
    assert nodes[3].address in views[1].detail
    assert {a.verifier for a in res.attestations} == set(pool) and all(a.verdicts == (1, 2, 1) for a in res.attestations)
    j = res.to_json()
    assert [r["verdict"] for r in j["replicas"]] == ["honest", "faulty", "honest"]
    assert all(v["outcome"] == "majority" and v["verdicts"] == [1, 2, 1] for v in j["verifiers"])


def test_checks_before_escrow_send_nothing(deployed, nodes_3x3):
    _, plan = nodes_3x3
    sent = deployed.w3.eth.get_transaction_count(deployed.address)
    with pytest.raises(JobError, match=r"1 to 8 replicas .*not 9"):  # JobMarket.MAX_REPLICAS, read from chain
        requester.run_job(deployed, spec(replicas=9))
    with pytest.raises(JobError, match="not registered"):
        requester.run_job(deployed, spec(model="nope"), plan=plan)
    with pytest.raises(JobError, match="no input"):
        requester.run_job(deployed, spec(input=b""), plan=plan)
    with pytest.raises(ContractError, match=r"^JobBadWindows\("):  # the contract's rule, simulated
        requester.run_job(deployed, spec(commit_window_s=3000, reveal_window_s=3000), plan=plan)
    with pytest.raises(JobError, match=r"below .* what the planned nodes ask for 3 tokens"):  # feeFloor, read first
        requester.run_job(deployed, spec(fee_wei=1), plan=plan)
    poor = TesseraChain(deployed.w3, deployed.deployment, Account.create())
    with pytest.raises(JobError, match="less than the fee"):
        requester.run_job(poor, spec(), plan=plan)
    assert deployed.w3.eth.get_transaction_count(deployed.address) == sent


def test_job_result_cli_prints_the_event_and_exits_by_outcome(deployed, nodes_3x3, anvil, tmp_path, monkeypatch,
                                                              capsys):
    nodes, plan = nodes_3x3
    monkeypatch.setenv("TESSERA_DEPLOYMENT", str(save_deployment(deployed.deployment, tmp_path / "dep.json")))
    good, bad, open_ = (requester.run_job(deployed, spec(), plan=plan, wait=False).job_id for _ in range(3))
    commit_reveal(deployed, nodes, good, (0, 1, 2), (0, 1))  # replica 2's tail goes silent: slashed
    advance_time(deployed.w3, 201)
    nodes[0].finalize(good)
    nodes[0].finalize(bad)  # nothing was revealed
    capsys.readouterr()

    def result(job):
        rc = main(["job", "result", str(job), "--json", "--rpc-url", anvil])
        return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    rc, out = result(good)
    assert rc == 0 and out["outcome"] == "agreed" and "text" in out and out["burned"] == str(10**17)
    assert out["slashed"] == {nodes[8].address: str(10**17)}
    assert out["payouts"] == {h["node"]: h["paid"] for h in out["hops"] if h["outcome"] == "paid"}
    assert sum(int(v) for v in out["payouts"].values()) + int(out["refund"]) == FEE
    assert [r["verdict"] for r in out["replicas"]] == ["honest", "honest", "silent"]
    rc, out = result(bad)
    assert rc == 4 and out["outcome"] == "refunded" and out["reason"]
    assert main(["job", "result", str(open_), "--rpc-url", anvil]) == 3
    assert main(["job", "result", str(good), "--rpc-url", anvil]) == 0
    text = capsys.readouterr().out
    assert "output: '11 22 33'" in text and f"slashed {nodes[8].address}: 0.1 ETH of stake (burned)" in text
    assert "replica 2: silent" in text
    assert main(["job", "result", str(bad), "--rpc-url", anvil]) == 4
    assert "nobody paid: none of the 3 replicas revealed" in capsys.readouterr().out
