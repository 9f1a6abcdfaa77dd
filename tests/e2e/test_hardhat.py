"""The honest job on the other devnet engine: Hardhat 3 (Node 22 from npm) instead of anvil,
same contracts, same CLI, same answer. One replica of two hops keeps it short."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chain.devnet import HARDHAT_DIR
from proto.types import decode_output
from tessera.devcluster import DevCluster

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"
TOKENS = 6


@pytest.fixture(scope="module")
def hardhat_cluster(tmp_path_factory):
    if not (HARDHAT_DIR / "node_modules" / "hardhat").is_dir():
        pytest.skip("Hardhat is not installed; `npm ci --prefix chain/hardhat` (part of `make node`) installs it")
    with DevCluster(tmp_path_factory.mktemp("hh"), model="smollm2-135m", copies=1, engine="hardhat") as c:
        c.start()
        yield c


def test_honest_job_via_cli_on_hardhat(hardhat_cluster, reference_tokens):
    c = hardhat_cluster
    assert c.w3.eth.chain_id == 31337 and "hardhat" in c.w3.client_version.lower()
    env = {**c.env, "TESSERA_RPC_URL": c.net.rpc_url}
    proc = subprocess.run(
        [sys.executable, "-m", "tessera.cli.main", "job", "submit", "--model", c.model, "--prompt", PROMPT,
         "--max-tokens", str(TOKENS), "--replicas", "1", "--fee", "0.01", "--codec", "fp32", "--account", "9",
         "--wait", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["outcome"] == "agreed" and res["winners"] == [0]
    assert decode_output(bytes.fromhex(res["output_hex"])) == reference_tokens(c.manifest.directory, PROMPT, TOKENS)
    paid = sum(int(v) for v in res["payouts"].values())
    assert len(res["payouts"]) == 2 and paid + int(res["refund"]) == 10**16  # both hops paid, the rest
    assert int(res["refund"]) > 0  # (the verification reserve nobody used) back to the requester
