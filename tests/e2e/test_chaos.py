"""Chaos: jobs run while a driver kills, stalls and restarts random nodes (heads included).

Every job must settle by the contract's rules (finalized exactly once; whoever is paid served
the revealed route of a paid replica), none may be lost, and money is conserved: what the
JobMarket and NodeRegistry hold grows by exactly the fees escrowed (nothing is withdrawn during
the test; refunds, keeper rewards and earnings stay as credits), and stake shrinks by exactly
what was slashed.

SmolLM2 in halves; positions 0-3 are two replicas (0, 1) and (2, 3), 4 and 5 the standbys of
their tails. Sized for two busy cores: 20 jobs of 6 tokens over about 50 s of faults.
"""

from __future__ import annotations

import logging
import random
import threading
import time

import pytest

from chain.devnet import advance_time
from proto.types import decode_output
from tessera import requester
from tessera.devcluster import DevCluster

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

PROMPT = "The capital of France is"
JOBS, TOKENS, FEE = 20, 6, 10**16
COMMIT_S, REVEAL_S = 60, 30
SUBMIT_EVERY_S = 2.5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with DevCluster(tmp_path_factory.mktemp("chaos"), copies=2, standby_spans=((15, 30), (15, 30)),
                    worker={"hop_timeout_s": 4.0}) as c:
        c.start()
        yield c


class Driver(threading.Thread):
    """A fault every 1-3 s on a random node: SIGKILL then restart (the node loads for a while in the
    background, so several may be down at once), or SIGSTOP for 1-8 s then SIGCONT."""

    def __init__(self, c, seed: int):
        super().__init__(daemon=True, name="chaos")
        self.c, self.rnd, self.stop = c, random.Random(seed), threading.Event()
        self.faults: list[tuple[str, int]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rnd.uniform(1.0, 3.0)):
                node = self.rnd.choice(self.c.nodes)
                if not node.alive:
                    continue
                if self.rnd.random() < 0.3:
                    self.faults.append(("kill", node.index))
                    self.c.kill_node(node)
                    self.stop.wait(self.rnd.uniform(0.5, 2.0))
                    self.c.start_node(node, wait=False)
                else:
                    self.faults.append(("stall", node.index))
                    self.c.pause_node(node)
                    self.stop.wait(self.rnd.uniform(1.0, 8.0))
                    self.c.resume_node(node)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _held(c, cl) -> int:
    return cl.balance(c.deployment.job_market) + cl.balance(c.deployment.node_registry)


def test_jobs_settle_by_the_rules_while_nodes_fail(cluster, reference_tokens):
    c = cluster
    cl = c.client()
    n = c.nodes
    plan = c.plan([n[0], n[1]], [n[2], n[3]], standbys=[[n[4]], [n[5]]])
    held, stakes = _held(c, cl), {x.address: cl.get_node(x.address).stake for x in n}
    driver = Driver(c, seed=16)
    driver.start()
    jobs = []
    try:
        for _ in range(JOBS):
            jobs.append(cl.submit_job(plan, PROMPT.encode(), TOKENS, FEE, codec="fp32", commit_window_s=COMMIT_S,
                                      reveal_window_s=REVEAL_S))
            time.sleep(SUBMIT_EVERY_S)
    finally:
        driver.stop.set()
        driver.join(60)
    assert driver.error is None, driver.error
    for node in n:  # every node back, none stalled
        c.resume_node(node)
        if not node.alive:
            c.start_node(node, wait=False)
    for node in n:
        c.wait_ready(node)
    _settle(c, cl, jobs)

    reference = reference_tokens(c.manifest.directory, PROMPT, TOKENS)
    fees = slashed = 0
    outcomes: dict[str, int] = {}
    for job in jobs:
        res = requester.result(cl, job)
        assert res.status == "finalized", f"job {job} is {res.status}"
        logs = cl.market.events.JobFinalized().get_logs(from_block=cl.get_request(job).block,
                                                        argument_filters={"jobId": job})
        assert len(logs) == 1  # settled once
        outcomes[res.outcome] = outcomes.get(res.outcome, 0) + 1
        reveals = cl.reveals(job)
        served = set()
        for r in res.winners:
            words = plan.replicas[r].words()
            served |= {h.node for i, (h, _) in enumerate(words) if reveals[r].served_mask >> i & 1}
            assert decode_output(reveals[r].output) == reference  # failover kept the output exact
        assert set(res.payouts) <= served and sum(res.payouts.values()) + res.refund <= FEE
        fees += FEE
        slashed += sum(res.slashes.values())
    assert _held(c, cl) == held + fees  # escrow conserved: every wei of every fee is still credited to someone
    assert sum(stakes.values()) - sum(cl.get_node(x.address).stake for x in n) == slashed  # stake conserved
    for node in n[0], n[2]:  # no replica ran twice to the end
        log = node.log.read_text()
        for job in jobs:
            assert log.count(f"job {job} replica {0 if node is n[0] else 1}: head done") <= 1
    failovers = sum(x.log.read_text().count("continuing at step") for x in (n[0], n[2]))
    logger.warning("chaos: %d jobs, outcomes %s, faults %s, %d failovers", len(jobs), outcomes, driver.faults,
                   failovers)
    assert outcomes.get("agreed", 0) >= JOBS // 2  # most jobs survive the faults


def _settle(c, cl, jobs, natural_s: float = 120.0) -> None:
    """Let the nodes finish what they can, then move the clock past the windows of the rest so
    their tails reveal and anyone may finalize them (requester.follow does)."""
    t_end = time.monotonic() + natural_s
    while time.monotonic() < t_end and any(cl.get_job(j).status != "finalized" for j in jobs):
        time.sleep(1.0)
    if all(cl.get_job(j).status == "finalized" for j in jobs):
        return
    advance_time(c.w3, COMMIT_S + 1)  # commits close; committed tails reveal
    time.sleep(10)
    advance_time(c.w3, REVEAL_S + 1)
    for j in jobs:
        requester.follow(cl, j, timeout_s=120)
