"""Failover mid-generation, end to end: a hop of a running replica stalls (SIGSTOP) or dies
(SIGKILL) at about step 10 of 32; the head continues on the span's standby, the replicas agree
and the chain pays the nodes that served, as the committed servedMask says.

SmolLM2 in three spans; positions 0-2 are replica 0 (A, B, C), 3-5 replica 1, and 6, 7 the
standbys of replica 0's middle (B') and tail (C'). Replica 0's hop words are A B B' C C'.
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from proto.types import decode_output
from tessera import requester
from tessera.devcluster import DevCluster

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"
TOKENS = 32
FEE = 3 * 10**16
HOP_TIMEOUT_S = 6.0
MIDDLE_STANDBY, TAIL_STANDBY = 0b01101, 0b10011  # A B' C, A B C'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with DevCluster(tmp_path_factory.mktemp("failover"), spans=[(0, 10), (10, 20), (20, 30)], copies=2,
                    standby_spans=((10, 20), (20, 30)), worker={"hop_timeout_s": HOP_TIMEOUT_S}) as c:
        c.start()
        yield c


def _head_tokens(node) -> float:
    """Tokens the node produced as head so far (its /metrics counter)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("tessera_head_tokens_total"))


def _at_step(node, base: float, step: int, timeout_s: float = 300.0) -> None:
    t_end = time.monotonic() + timeout_s
    while _head_tokens(node) < base + step:
        assert time.monotonic() < t_end, f"the head did not reach step {step} within {timeout_s:.0f} s"
        time.sleep(0.05)


def _run_with_fault(c, victim: int, fault, codec: str) -> tuple:
    """Submit a 32-token job on replicas (0, 1, 2) + standbys (6, 7) and (3, 4, 5); apply ``fault``
    to node ``victim`` once replica 0 has produced 10 tokens; return (job, result, earnings credited)."""
    n = c.nodes
    cl = c.client()
    plan = c.plan([n[0], n[1], n[2]], [n[3], n[4], n[5]], standbys=[[n[6], n[7]], []])
    before = {x.address: cl.get_node(x.address).earnings for x in n}
    market_before = cl.balance(c.deployment.job_market)
    base = _head_tokens(n[0])
    job = cl.submit_job(plan, PROMPT.encode(), TOKENS, FEE, codec=codec)
    _at_step(n[0], base, 10)
    fault(n[victim])
    res = requester.follow(cl, job, timeout_s=300)
    credited = {x.address: cl.get_node(x.address).earnings - before[x.address] for x in n}
    assert cl.balance(c.deployment.job_market) == market_before + res.refund  # the fee left escrow, all of it
    return job, res, {a: v for a, v in credited.items() if v}


def _check(c, res, credited, reference, served_mask: int, failed: int, standby: int) -> None:
    n = c.nodes
    assert res.outcome == "agreed" and res.winners == (0, 1)  # both replicas revealed the same output
    if reference is not None:
        assert decode_output(res.output) == reference  # exactly the unsplit model's greedy continuation
    reveals = c.client().reveals(res.job_id)
    assert reveals[0].served_mask == served_mask and reveals[1].served_mask == 0b111
    served = {n[i].address for i in (0, 1, 2, 3, 4, 5, standby)} - {n[failed].address}
    assert set(credited) == served and set(res.payouts) == served  # who served is paid, nobody else
    assert sum(credited.values()) + res.refund == FEE
    assert credited[n[standby].address] == credited[n[failed + 3].address]  # same blocks, same price, same pay


def test_a_stalled_middle_hop_fails_over_to_its_standby(cluster, reference_tokens):
    c = cluster
    victim = c.nodes[1]
    try:
        job, res, credited = _run_with_fault(c, 1, c.pause_node, "fp32")  # replayed as one prefill
    finally:
        c.resume_node(victim)
    _check(c, res, credited, reference_tokens(c.manifest.directory, PROMPT, TOKENS), MIDDLE_STANDBY, 1, 6)
    head_log = c.nodes[0].log.read_text()
    assert f"job {job} replica 0: " in head_log and "continuing at step" in head_log


def test_a_killed_tail_fails_over_to_its_standby_which_commits(cluster):
    c = cluster
    victim = c.nodes[2]
    try:
        job, res, credited = _run_with_fault(c, 2, c.kill_node, "int8-outlier")  # replayed step by step
        committer = res.settlement  # the standby tail committed and revealed: the chain paid its route
        assert committer is not None
    finally:
        c.start_node(victim)
    # int8 activations need not give the fp32 model's tokens; the replica without failover is the reference
    _check(c, res, credited, None, TAIL_STANDBY, 2, 7)
