"""Verification end to end: hop receipts on the real ring, a contract-drawn verifier node that fetches
them, re-executes and attests on its own, honest divergence paid, a lying hop slashed and named.

One cluster: A [0, 15) + B [15, 30) and C [0, 10) + D [10, 20) + E [20, 30) of SmolLM2 (honest, cut at
different points), V serving every block (the verifier pool; it is in no plan). With the int8-outlier
codec, "To make a cake, you" comes out differently from the two cuts from the third token on (both
honest: rounding at different cuts tips a near-tie), so every job here is disputed.
"""

from __future__ import annotations

import pytest

from proto.types import ExecSpec, JobMode
from tessera import requester
from tessera.devcluster import DevCluster

pytestmark = pytest.mark.e2e

PROMPT = "To make a cake, you"
TOKENS = 8
FEE = 3 * 10**16


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with DevCluster(tmp_path_factory.mktemp("verify"), model="smollm2-135m",
                    spans=[(0, 15), (15, 30), (0, 10), (10, 20), (20, 30)], copies=1, verifiers=1) as c:
        c.start()
        yield c


def _nodes(c):
    return c.nodes[:6]  # A, B, C, D, E, V


def test_honest_replicas_that_differ_are_judged_honest_and_all_paid(cluster):
    c = cluster
    a, b, cc, d, e, v = _nodes(c)
    cl = c.client()
    before = {n.address: cl.get_node(n.address) for n in (a, b, cc, d, e)}
    job = cl.submit_job(c.plan([a, b], [cc, d, e]), PROMPT.encode(), TOKENS, FEE, codec="int8-outlier",
                        commit_window_s=60, reveal_window_s=60)
    res = requester.follow(cl, job, timeout_s=240)
    assert res.reveals[0] != res.reveals[1]  # honest but different outputs: a dispute
    assert res.settlement.verifiers and {x.node for x in res.settlement.verifiers} == {v.address}
    assert res.outcome == "verified" and res.winners == (0, 1), res
    assert [r.verdict for r in res.replicas()] == ["honest", "divergent"]  # paid, other output
    assert set(res.payouts) == set(before) and not res.slashes  # every honest node paid, nobody slashed
    for n in (a, b, cc, d, e):
        now = cl.get_node(n.address)
        assert now.stake == before[n.address].stake and now.reputation >= before[n.address].reputation
    (att,) = cl.dispute_state(job).attestations
    assert att.verifier == v.address and att.attested and att.verdicts == (1, 1)


def test_a_byzantine_middle_hop_is_slashed_and_named(cluster):
    c = cluster
    a, b, cc, _d, e, v = _nodes(c)
    bad = c.add_node((10, 20), byzantine=True, noise=1.0)  # perturbs the activations it sends
    cl = c.client()
    try:
        stake = cl.get_node(bad.address).stake
        job = cl.submit_job(c.plan([a, b], [cc, bad, e]), PROMPT.encode(), TOKENS, FEE, codec="int8-outlier",
                            commit_window_s=60, reveal_window_s=60)
        res = requester.follow(cl, job, timeout_s=240)
        assert res.outcome == "verified" and res.winners == (0,), res
        assert [r.verdict for r in res.replicas()] == ["honest", "faulty"]
        assert res.slashes == {bad.address: stake // 10}, res.slashes  # HopSlashed names the middle hop
        assert bad.address in res.replicas()[1].detail
        assert set(res.payouts) == {a.address, b.address}  # the rest of the faulty replica: unpaid, unpunished
        assert cl.get_node(cc.address).stake == cl.get_node(e.address).stake == 10**18
        (att,) = cl.dispute_state(job).attestations
        assert att.verifier == v.address and att.verdicts == (1, 3)  # 2 + hop 1
    finally:
        c.stop_node(bad)


def test_optimistic_job_with_forced_audit_catches_int8_weights_sold_as_fp32(cluster):
    c = cluster
    a, _b, _cc, _d, _e, v = _nodes(c)
    cheap = c.add_node((15, 30), weights="int8-mixed")  # advertises exact weights, runs int8
    cl = c.client()
    try:
        job = cl.submit_job(c.plan([a, cheap]), PROMPT.encode(), TOKENS, FEE, codec="int8-outlier", commit_window_s=60,
                            reveal_window_s=60, spec=ExecSpec(mode=JobMode.OPTIMISTIC, audit_bps=10_000))
        res = requester.follow(cl, job, timeout_s=240)
        assert res.settlement.verifiers and res.settlement.verifiers[0].node == v.address  # audited
        assert [r.verdict for r in res.replicas()] == ["faulty"], res.replicas()
        assert cheap.address in res.slashes and a.address not in res.slashes
    finally:
        c.stop_node(cheap)
