"""JobMarket on a real anvil: every finalize outcome and every job error."""

from __future__ import annotations

import pytest
from web3 import Web3

from chain.devnet import advance_time
from chain.testing import clients
from proto.errors import ContractError
from proto.types import encode_output, model_id, pack_hop

pytestmark = pytest.mark.integration

FEE = 9 * 10**17  # 0.9 ETH: divisible by 30 and by 60 blocks
SALT = b"\x05" * 32
OUT = encode_output([11, 22, 33])
BAD = encode_output([11, 22, 34])


def raises(name: str):
    return pytest.raises(ContractError, match=rf"^{name}\(")


def tails(nodes):
    return [nodes[3 * r + 2] for r in range(3)]


def run(chain, nodes, plan, outputs, reveal=(True, True, True), fee=FEE):
    """Submit, commit outputs[r] (None = no commit), reveal where asked; return the job id."""
    job = chain.submit_job(plan, b"prompt", max_tokens=3, fee_wei=fee, commit_window_s=100, reveal_window_s=100)
    for r, (t, out) in enumerate(zip(tails(nodes), outputs)):
        if out is not None:
            t.commit(job, r, out, SALT)
    for r, (t, out) in enumerate(zip(tails(nodes), outputs)):
        if out is not None and reveal[r]:
            t.reveal(job, r, out, SALT)
    return job


def books(chain, nodes):
    """What finalize may change: each node's (earnings, stake) and the requester's credits."""
    return [(n.get_node().earnings, n.get_node().stake) for n in nodes], chain.credits_of()


def assert_event_is_what_the_chain_did(res, nodes, before, after):
    """The decoded JobFinalized equals the earnings credited, stake taken and requester credits."""
    assert [h.node for h in res.hops] == [n.address for n in nodes]  # plan order
    assert [h.paid for h in res.hops] == [a[0] - b[0] for a, b in zip(after[0], before[0])]
    assert [h.slashed for h in res.hops] == [b[1] - a[1] for a, b in zip(after[0], before[0])]
    assert res.requester_credit == after[1] - before[1]


def test_3_of_3_pays_every_node_by_blocks_and_raises_reputation(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = run(deployed, nodes, plan, [OUT, OUT, OUT])
    before = books(deployed, nodes)
    res = deployed.finalize(job)
    assert res.majority and res.winners == (0, 1, 2) and res.output_hash == Web3.keccak(OUT)
    assert_event_is_what_the_chain_did(res, nodes, before, books(deployed, nodes))
    assert [h.outcome for h in res.hops] == ["paid"] * 9 and res.refund == 0
    for n in nodes:
        rec = n.get_node()
        assert rec.earnings == FEE // 9 and rec.reputation == pytest.approx(1.01)
    before = nodes[0].balance()
    nodes[8].withdraw_earnings(nodes[0].address)  # anyone may trigger; funds go to the payout address
    assert nodes[0].balance() == before + FEE // 9
    assert deployed.get_job(job).status == "finalized"


def test_2_of_3_pays_majority_and_penalises_the_dissenter(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = run(deployed, nodes, plan, [OUT, BAD, OUT])
    res = deployed.finalize(job)
    assert res.winners == (0, 2)
    assert [h.outcome for h in res.hops] == ["paid"] * 3 + ["failed"] * 3 + ["paid"] * 3
    assert res.payouts == {n.address: FEE // 6 for n in nodes[:3] + nodes[6:]}
    assert [n.get_node().earnings for n in nodes] == [FEE // 6] * 3 + [0] * 3 + [FEE // 6] * 3
    assert nodes[4].get_node().reputation == pytest.approx(0.8)
    assert nodes[0].get_node().reputation == pytest.approx(1.01)


def test_no_majority_refunds_the_requester_and_punishes_nobody(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = run(deployed, nodes, plan, [OUT, BAD, encode_output([1])])
    res = deployed.finalize(job)
    assert not res.majority and res.refund == FEE and res.winners == ()
    assert [h.outcome for h in res.hops] == ["none"] * 9 and res.payouts == {}
    assert deployed.credits_of() == FEE
    assert all(n.get_node().reputation == 1.0 and n.get_node().earnings == 0 for n in nodes)
    assert deployed.withdraw() == FEE
    with raises("JobNothingToWithdraw"):
        deployed.withdraw()


def test_committed_but_unrevealed_tail_is_slashed(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = run(deployed, nodes, plan, [OUT, OUT, OUT], reveal=(True, True, False))
    with raises("JobNotFinalizable"):
        deployed.finalize(job)
    advance_time(deployed.w3, 201)
    res = deployed.finalize(job)
    assert res.slashes == {nodes[8].address: 10**17} and res.hops[8].outcome == "slashed"
    silent = nodes[8].get_node()
    assert silent.stake == 10**18 - 10**17 and silent.status == "understaked"
    assert nodes[6].get_node().stake == 10**18  # only the tail is answerable for the commitment
    assert deployed.credits_of() == 10**17  # slashed stake compensates the requester
    assert nodes[0].get_node().earnings == FEE // 6
    nodes[8].add_stake(10**17)  # back to the minimum: active again
    assert nodes[8].get_node().status == "active"


def test_nothing_by_the_deadline_refunds(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = run(deployed, nodes, plan, [None, None, None])
    advance_time(deployed.w3, 201)
    assert deployed.finalize(job).refund == FEE
    with raises("JobAlreadyFinalized"):
        deployed.finalize(job)


def test_jobfinalized_reports_what_was_credited_with_dust_and_a_slashed_tail(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    fee = FEE + 7  # 7 wei of integer-division dust
    job = run(deployed, nodes, plan, [OUT, OUT, OUT], reveal=(True, True, False), fee=fee)
    advance_time(deployed.w3, 201)
    before = books(deployed, nodes)
    res = deployed.finalize(job)
    assert_event_is_what_the_chain_did(res, nodes, before, books(deployed, nodes))
    assert res.winners == (0, 1) and sum(res.payouts.values()) == fee
    assert res.payouts[nodes[2].address] == FEE // 6 + 7  # the dust went to the first agreeing tail
    assert [h.outcome for h in res.hops[6:]] == ["none", "none", "slashed"]
    assert res.requester_credit == 10**17 and res.refund == 0
    assert deployed.settlement(job) == res  # read back from the log


def test_commit_and_reveal_rules(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = deployed.submit_job(plan, b"x", max_tokens=1, fee_wei=FEE, commit_window_s=100, reveal_window_s=100)
    with raises("JobNotTail"):
        nodes[0].commit(job, 0, OUT, SALT)
    with raises("JobBadReplica"):
        nodes[2].commit(job, 5, OUT, SALT)
    nodes[2].commit(job, 0, OUT, SALT)
    nodes[5].commit(job, 1, OUT, SALT)
    with raises("JobAlreadyCommitted"):
        nodes[2].commit(job, 0, OUT, SALT)
    with raises("JobRevealNotOpen"):
        nodes[2].reveal(job, 0, OUT, SALT)
    with raises("JobNotCommitted"):
        nodes[8].reveal(job, 2, OUT, SALT)
    advance_time(deployed.w3, 101)
    with raises("JobCommitClosed"):
        nodes[8].commit(job, 2, OUT, SALT)
    with raises("JobBadReveal"):
        nodes[2].reveal(job, 0, BAD, SALT)
    with raises("JobBadReveal"):  # someone else replaying the tail's reveal
        nodes[0].reveal(job, 0, OUT, SALT)
    nodes[2].reveal(job, 0, OUT, SALT)
    with raises("JobAlreadyRevealed"):
        nodes[2].reveal(job, 0, OUT, SALT)
    advance_time(deployed.w3, 100)
    with raises("JobRevealClosed"):
        nodes[5].reveal(job, 1, OUT, SALT)


def _raw_submit(chain, hops, fee=FEE, model="m", commit_s=100, reveal_s=100, inline=b"x", max_tokens=1):
    params = (inline, b"\0" * 32, "", max_tokens, 0, 0, 4, commit_s, reveal_s)
    chain._send(chain.market.functions.submitJob(model_id(model), hops, params), fee)


def test_plan_and_request_errors(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    a = [n.address for n in nodes]
    good = [pack_hop(a[i], 10 * (i % 3), 10 * (i % 3) + 10, i // 3) for i in range(9)]
    cases = {
        "JobPlanGap": [pack_hop(a[0], 0, 10, 0), pack_hop(a[1], 11, 20, 0), pack_hop(a[2], 20, 30, 0)],
        "JobPlanOverlap": [pack_hop(a[0], 0, 10, 0), pack_hop(a[1], 9, 20, 0), pack_hop(a[2], 20, 30, 0)],
        "JobPlanIncomplete": [pack_hop(a[0], 0, 10, 0), pack_hop(a[1], 10, 20, 0)],
        "JobPlanNodeReused": good[:3] + [pack_hop(a[0], 0, 10, 1)] + good[4:6],
        "JobPlanBadReplicas": good[:3] + good[6:],  # replica 0 then replica 2
        "NodeSpanNotServed": [pack_hop(a[1], 0, 10, 0), pack_hop(a[0], 10, 20, 0), pack_hop(a[2], 20, 30, 0)],
        "NodeNotActive": [pack_hop(deployed.address, 0, 30, 0)],
    }
    for name, hops in cases.items():
        with raises(name):
            _raw_submit(deployed, hops)
    with raises("JobBadRequest"):
        _raw_submit(deployed, good, fee=0)
    with raises("JobBadRequest"):
        _raw_submit(deployed, good, inline=b"")
    with raises("JobBadWindows"):
        _raw_submit(deployed, good, commit_s=3000, reveal_s=3000)
    with raises("ModelUnknown"):
        _raw_submit(deployed, good, model="nope")
    deployed.register_model("other", 30, b"\2" * 32)
    with raises("NodeWrongModel"):
        _raw_submit(deployed, good, model="other")
    with raises("JobUnknown"):
        deployed.get_job(12345)
    _raw_submit(deployed, good)
    req = deployed.get_request(1)  # read back from JobSubmitted
    assert clients(deployed, 1)[0].plan_of(1) == plan  # a fresh client reads it from the chain
    assert req.plan("m", 30) == plan and req.fee == FEE and req.codec.label == "int8-outlier"
    with raises("JobPlanMismatch"):
        nodes[2]._send(nodes[2].market.functions.commit(1, 0, b"\1" * 32, req.model_id, FEE + 1, list(req.hops)))
    with raises("JobOnlyNodeRegistry"):
        deployed._send(deployed.market.functions.depositSlashed(), 1)
