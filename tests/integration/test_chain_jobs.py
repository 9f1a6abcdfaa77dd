"""JobMarket on a real anvil: the fast path, disputes judged by drawn verifiers, every job error."""

from __future__ import annotations

import pytest
from web3 import Web3

from chain.devnet import advance_time
from chain.records import JobDisputed, JobSettlement
from chain.testing import clients, funded, verifiers
from proto.errors import ContractError
from proto.types import ExecSpec, Hop, JobMode, Plan, Replica, encode_output, pack_hop, verdict_faulty

pytestmark = pytest.mark.integration

FEE = 9 * 10**17  # 0.9 ETH; the node pool is 0.81 ETH (10% verification reserve)
POOL = FEE - FEE // 10
SALT = b"\x05" * 32
OUT = encode_output([11, 22, 33])
BAD = encode_output([11, 22, 34])
SLASH = 10**17


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
    if any(out is None for out in outputs):
        advance_time(chain.w3, 101)
    for r, (t, out) in enumerate(zip(tails(nodes), outputs)):
        if out is not None and reveal[r]:
            t.reveal(job, r, out, SALT)
    return job


def books(chain, nodes):
    """What finalize may change: each node's (earnings, stake), the requester's credits, burned."""
    return [(n.get_node().earnings, n.get_node().stake) for n in nodes], chain.credits_of(), chain.burned()


def assert_event_is_what_the_chain_did(res: JobSettlement, nodes, before, after):
    """The decoded JobFinalized equals the earnings credited, stake taken, refund and burn."""
    assert [h.node for h in res.hops] == [n.address for n in nodes]  # plan order
    assert [h.paid for h in res.hops] == [a[0] - b[0] for a, b in zip(after[0], before[0])]
    assert [h.slashed for h in res.hops] == [b[1] - a[1] for a, b in zip(after[0], before[0])]
    assert res.refund == after[1] - before[1] and res.burned == after[2] - before[2]


def test_agreement_pays_served_hops_by_price_and_refunds_the_rest(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = run(deployed, nodes, plan, [OUT, OUT, OUT])
    before = books(deployed, nodes)
    res = deployed.finalize(job)
    assert isinstance(res, JobSettlement) and res.outcome == "agreed" and res.paid_replicas == (0, 1, 2)
    assert_event_is_what_the_chain_did(res, nodes, before, books(deployed, nodes))
    assert [h.outcome for h in res.hops] == ["paid"] * 9 and res.answer == 0
    assert res.payouts == {n.address: POOL // 9 for n in nodes}  # equal prices, equal spans
    assert res.refund == FEE - 9 * (POOL // 9)  # the verification reserve and the dust come back
    assert all(n.get_node().reputation == pytest.approx(1.01) for n in nodes)
    before = nodes[0].balance()
    nodes[8].withdraw_earnings(nodes[0].address)  # anyone may trigger; funds go to the payout address
    assert nodes[0].balance() == before + POOL // 9
    assert deployed.get_job(job).status == "finalized"
    assert deployed.settlement(job) == res  # read back from the logs


def test_divergence_is_judged_by_verifiers_the_contract_draws(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    pool = verifiers(deployed)
    job = run(deployed, nodes, plan, [OUT, BAD, OUT])
    disputed = deployed.finalize(job)
    assert isinstance(disputed, JobDisputed) and disputed.reason == "outputs differ"
    with raises("JobAwaitingVerifiers"):
        deployed.finalize(job)
    assert deployed.get_job(job).seed_block == deployed.w3.eth.block_number  # the dispute's own block
    state = deployed.draw_verifiers(job)  # from the very next block
    assert state.status == "attesting" and set(state.verifiers) == {v.address for v in pool}
    assert deployed.verifiers_of(job) == state.verifiers
    with raises("DisputeStillOpen"):
        deployed.finalize(job)
    by_addr = {v.address: v for v in pool}
    for addr in state.verifiers:  # replica 1's second served hop (nodes[4]) is faulty
        by_addr[addr].attest(job, [1, verdict_faulty(1), 1])
    with raises("DisputeAlreadyAttested"):
        by_addr[state.verifiers[0]].attest(job, [1, 1, 1])
    assert all(a.attested and a.verdicts == (1, 3, 1) for a in deployed.dispute_state(job).attestations)
    before = books(deployed, nodes)
    res = deployed.finalize(job)
    assert_event_is_what_the_chain_did(res, nodes, before, books(deployed, nodes))
    assert res.outcome == "verified" and res.paid_replicas == (0, 2) and res.verdicts == (1, 3, 1)
    assert res.slashes == {nodes[4].address: SLASH} and res.burned == 0
    pot = FEE // 10 + SLASH  # the reserve and the slashed stake go to the verifiers in the majority
    assert sorted(v.paid for v in res.verifiers) == sorted([pot - 2 * (pot // 3), pot // 3, pot // 3])
    assert all(v.outcome == "majority" for v in res.verifiers)
    assert res.refund == POOL - 6 * (POOL // 9)  # the faulty replica's pay goes back to the requester
    assert nodes[3].get_node().reputation == 1.0 and nodes[4].get_node().reputation == pytest.approx(0.8)


def test_a_silent_committer_is_slashed_and_its_stake_burned(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = run(deployed, nodes, plan, [OUT, OUT, OUT], reveal=(True, True, False))
    with raises("JobNotFinalizable"):
        deployed.finalize(job)
    advance_time(deployed.w3, 201)
    before = books(deployed, nodes)
    res = deployed.finalize(job)
    assert_event_is_what_the_chain_did(res, nodes, before, books(deployed, nodes))
    assert res.slashes == {nodes[8].address: SLASH} and res.hops[8].outcome == "slashed" and res.burned == SLASH
    silent = nodes[8].get_node()
    assert silent.stake == 10**18 - SLASH and silent.status == "understaked"
    assert nodes[6].get_node().stake == 10**18  # only the committer is answerable for the commitment
    assert deployed.credits_of() == res.refund == FEE - 6 * (POOL // 9)  # never the slashed stake
    nodes[8].add_stake(SLASH)  # back to the minimum: active again
    assert nodes[8].get_node().status == "active"


def test_nothing_by_the_deadline_refunds_and_a_late_keeper_is_paid(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = run(deployed, nodes, plan, [None, None, None])  # 101 s in
    advance_time(deployed.w3, 100)
    res = deployed.finalize(job)  # within the grace: no keeper reward
    assert res.outcome == "refunded" and res.refund == FEE
    with raises("JobAlreadyFinalized"):
        deployed.finalize(job)
    job = run(deployed, nodes, plan, [None, None, None])
    advance_time(deployed.w3, 100 + 61)  # past the reveal deadline and the 60 s grace
    keeper = nodes[0]
    before = keeper.credits_of()
    assert keeper.finalize(job).refund == FEE - FEE // 100
    assert keeper.credits_of() - before == FEE // 100  # 1% of the fee, from the reserve


def test_a_standby_takes_over_the_tail(deployed, nodes_3x3):
    nodes, _ = nodes_3x3
    (sb,) = clients(deployed, 1, first=10)
    sb.register_node("m", 20, 30, "127.0.0.1:6100", 10**18, price_per_block=1)
    plan = Plan("m", 30, (Replica(tuple(Hop(nodes[k].address, 10 * k, 10 * k + 10) for k in range(3)),
                                  (Hop(sb.address, 20, 30),)),))
    job = deployed.submit_job(plan, b"x", max_tokens=1, fee_wei=FEE, commit_window_s=100, reveal_window_s=100)
    assert plan.replicas[0].primary_mask() == 0b0111
    route = 0b1011  # the standby (word 3) served the tail's span
    sb.commit(job, 0, OUT, SALT, served_mask=route)
    with raises("JobNotTail"):  # the tail replays the standby's opening
        nodes[2].reveal(job, 0, OUT, SALT, served_mask=route)
    sb.reveal(job, 0, OUT, SALT, served_mask=route)
    res = deployed.finalize(job)
    assert res.payouts == {nodes[0].address: POOL // 3, nodes[1].address: POOL // 3, sb.address: POOL // 3}


def test_optimistic_job_pays_one_replica_unless_audited(deployed, nodes_3x3):
    nodes, _ = nodes_3x3
    plan = Plan("m", 30, (Replica(tuple(Hop(nodes[k].address, 10 * k, 10 * k + 10) for k in range(3))),))
    never = ExecSpec(mode=JobMode.OPTIMISTIC, audit_bps=0)
    job = deployed.submit_job(plan, b"x", 1, FEE, commit_window_s=100, reveal_window_s=100, spec=never)
    nodes[2].commit(job, 0, OUT, SALT)
    nodes[2].reveal(job, 0, OUT, SALT)
    assert deployed.finalize(job).outcome == "agreed"
    always = ExecSpec(mode=JobMode.OPTIMISTIC, audit_bps=10_000)
    job = deployed.submit_job(plan, b"x", 1, FEE, commit_window_s=100, reveal_window_s=100, spec=always)
    assert deployed.get_request(job).spec == always  # read back from JobSubmitted
    nodes[2].commit(job, 0, OUT, SALT)
    nodes[2].reveal(job, 0, OUT, SALT)
    assert deployed.finalize(job).reason == "audited"
    res = deployed.draw_verifiers(job)  # no full node exists: settled without a verdict, the work paid
    assert isinstance(res, JobSettlement) and res.outcome == "unverified" and res.paid_replicas == (0,)
    assert res.refund == FEE - 3 * (POOL // 3)


def test_commit_and_reveal_rules(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    job = deployed.submit_job(plan, b"x", max_tokens=1, fee_wei=FEE, commit_window_s=100, reveal_window_s=100)
    with raises("JobNotTail"):
        nodes[0].commit(job, 0, OUT, SALT)
    with raises("JobBadReplica"):
        nodes[2]._send(nodes[2].market.functions.commit(job, 5, b"\1" * 32, [], b"\0" * 32, b"\0" * 32))
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
    with raises("JobNotTail"):  # someone else replaying the tail's reveal
        nodes[0].reveal(job, 0, OUT, SALT)
    nodes[2].reveal(job, 0, OUT, SALT)
    with raises("JobAlreadyRevealed"):
        nodes[2].reveal(job, 0, OUT, SALT)
    advance_time(deployed.w3, 100)
    with raises("JobRevealClosed"):
        nodes[5].reveal(job, 1, OUT, SALT)


def _raw_submit(chain, hops, fee=FEE, model="m", commit_s=100, reveal_s=100, inline=b"x", max_tokens=1, codec=4,
                spec=0):
    params = (inline, b"\0" * 32, "", max_tokens, 0, 0, codec, commit_s, reveal_s, spec)
    chain._send(chain.market.functions.submitJob(chain.model_id(model), hops, params), fee)


def test_plan_and_request_errors(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    a = [n.address for n in nodes]
    good = [pack_hop(a[i], 10 * (i % 3), 10 * (i % 3) + 10, i // 3) for i in range(9)]
    cases = {
        "JobPlanGap": [pack_hop(a[0], 0, 10, 0), pack_hop(a[1], 11, 20, 0), pack_hop(a[2], 20, 30, 0)],
        "JobPlanOverlap": [pack_hop(a[0], 0, 10, 0), pack_hop(a[1], 9, 20, 0), pack_hop(a[2], 20, 30, 0)],
        "JobPlanEmptyHop": [pack_hop(a[0], 0, 10, 0), pack_hop(a[1], 10, 10, 0), pack_hop(a[2], 10, 30, 0)],
        "JobPlanHopJunk": [good[0] | 1 << 240, *good[1:3]],
        "JobPlanBadStandby": [pack_hop(a[0], 0, 10, 0, standby=True), *good[1:3]],
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
    with raises("JobBadWindows"):  # a reveal window too short to reveal in
        _raw_submit(deployed, good, reveal_s=1)
    with pytest.raises(ContractError, match=r"^JobBadParam\(name=codec, value=200"):
        _raw_submit(deployed, good, codec=200)
    with pytest.raises(ContractError, match=r"^JobBadParam\(name=maxTokens, value=5000, min=1, max=4096\)"):
        _raw_submit(deployed, good, max_tokens=5000)
    with pytest.raises(ContractError, match=r"^JobFeeTooLow\(fee=1, minFee=\d+\)"):
        _raw_submit(deployed, good, fee=1, max_tokens=4096)
    with raises("ModelUnknown"):
        _raw_submit(deployed, good, model="nope")
    deployed.register_model("other", 30, 4096, b"\2" * 32)
    with raises("NodeWrongModel"):
        _raw_submit(deployed, good, model="other")
    with raises("JobUnknown"):
        deployed.get_job(12345)
    _raw_submit(deployed, good)
    req = deployed.get_request(1)  # read back from JobSubmitted
    assert clients(deployed, 1)[0].plan_of(1) == plan  # a fresh client reads it from the chain
    assert req.plan("m", 30) == plan and req.fee == FEE and req.codec.label == "int8-outlier"
    assert req.prices == (1,) * 9 and req.weight == 90
    assert deployed.fee_floor(plan, 4096) == -(-90 * 4096 * 10_000 // 9_000)
    with raises("JobPlanMismatch"):
        nodes[2]._send(nodes[2].market.functions.commit(1, 0, b"\1" * 32, [], Web3.keccak(b"x"), req.terms_digest()))
    with raises("JobOnlyNodeRegistry"):
        deployed._send(deployed.market.functions.depositSlashed(), 1)
    assert funded(deployed, 41).balance() > 0
