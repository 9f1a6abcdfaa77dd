"""The same client on the in-process py-evm chain (few, focused: that chain is slow)."""

from __future__ import annotations

import pytest

from chain.devnet import advance_time
from chain.events import EventFollower
from chain.records import JobRequest
from chain.testing import setup_3x3
from proto.errors import ContractError
from proto.types import encode_output

pytestmark = pytest.mark.integration

SALT = b"\x03" * 32


def test_embedded_agreement_dispute_then_timeout_refund(embedded_deployed, tmp_path):
    chain = embedded_deployed
    nodes, plan = setup_3x3(chain)
    good, bad = encode_output([7, 8]), encode_output([7, 9])
    job = chain.submit_job(plan, b"hi", max_tokens=2, fee_wei=10**18, commit_window_s=60, reveal_window_s=60)
    for r in range(3):
        nodes[3 * r + 2].commit(job, r, good, SALT)
    for r in range(3):
        nodes[3 * r + 2].reveal(job, r, good, SALT)
    assert chain.finalize(job).paid_replicas == (0, 1, 2)
    assert nodes[0].get_node().earnings == 10**17 and nodes[3].get_node().reputation == pytest.approx(1.01)

    job2 = chain.submit_job(plan, b"hi", max_tokens=2, fee_wei=10**17, commit_window_s=60, reveal_window_s=60)
    for r, out in enumerate([good, bad, good]):
        nodes[3 * r + 2].commit(job2, r, out, SALT)
    for r, out in enumerate([good, bad, good]):
        nodes[3 * r + 2].reveal(job2, r, out, SALT)
    assert chain.finalize(job2).reason == "outputs differ"
    assert chain.draw_verifiers(job2).outcome == "unverified"  # no full node to draw: all paid, none judged

    job3 = chain.submit_job(plan, b"hi", max_tokens=2, fee_wei=10**17, commit_window_s=60, reveal_window_s=60)
    with pytest.raises(ContractError, match=r"^JobNotFinalizable\("):
        chain.finalize(job3)
    advance_time(chain.w3, 121)
    assert chain.finalize(job3).refund == 10**17

    f = EventFollower(chain.w3, [chain.market], tmp_path / "c.json", chain.deployment.block, names=["JobSubmitted"])
    got = []
    f.run_once(lambda ev: got.append(JobRequest.from_event(ev.args, ev.block)))
    assert [r.job_id for r in got] == [job, job2, job3]
    assert got[0].plan("m", 30) == plan and got[0].input == b"hi" and got[0].max_tokens == 2
