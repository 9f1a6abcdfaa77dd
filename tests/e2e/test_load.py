"""Many jobs at once through the whole system (a devnet of 8 node processes, 3 requesters, text and
image jobs, greedy and sampled): every job settles by majority with all replicas agreeing, none is
lost or run twice, and the fees and stakes add up."""

from __future__ import annotations

import pytest

from bench.load import parser, run

pytestmark = pytest.mark.e2e


def test_a_burst_of_mixed_jobs_all_settle_once_with_money_conserved(tmp_path):
    res = run(parser().parse_args(["--jobs", "12", "--rate", "2", "--tokens", "6", "--timeout", "600"]), tmp_path)
    assert res["checks"] == {k: True for k in res["checks"]}, res["checks"]
    assert res["replicas_run"] == res["replicas_planned"] == 4 * 3 + 4 * 3 + 4 * 2  # greedy, sampled, image
    assert {k: v["settled"] for k, v in res["by_kind"].items()} == {"greedy": 4, "image": 4, "sampled": 4}
    assert res["first_token_s"]["n"] == 12
