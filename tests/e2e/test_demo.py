"""`tessera demo --byzantine` as a user runs it: a real CLI process that starts anvil, operator
nodes and verifier nodes, and must end with the verifiers' verdicts: the honest replica paid
although two corrupt replicas outvote it, each corrupt hop named and slashed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_byzantine_demo_pays_the_outvoted_honest_replica_and_slashes_the_corrupt_hops():
    # two corrupt tails add the same seeded noise, so their wrong output holds a 2-of-3 majority
    proc = subprocess.run([sys.executable, "-m", "tessera.cli.main", "demo", "--byzantine", "2", "--max-tokens", "4",
                           "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = out["byzantine_nodes"]
    assert len(bad) == 2 and len(out["verifier_nodes"]) == 2 and not set(bad) & set(out["verifier_nodes"])
    assert out["outcome"] == "verified", out
    assert sorted(out["verdicts"]) == ["faulty", "faulty", "honest"], out["verdicts"]
    honest = out["verdicts"].index("honest")
    assert out["winners"] == [honest]  # paid in the minority
    assert out["slashed_wei"] == {b: str(10**17) for b in bad}  # a tenth of each corrupt tail's 1 ETH stake
    assert len(out["payouts_wei"]) == 2 and not set(bad) & set(out["payouts_wei"])  # the honest replica's hops
    expected = [1 if r == honest else 3 for r in range(3)]  # 1 honest; 2 + hop 1: the tail
    assert out["attestations"] == {v: expected for v in out["verifier_nodes"]}
    assert set(out["verifiers_paid_wei"]) == set(out["verifier_nodes"])
    assert proc.stdout.count("named faulty by the verifiers") == 2 and "(verifier)" in proc.stdout
