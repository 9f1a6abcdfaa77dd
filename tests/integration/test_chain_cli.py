"""`tessera chain/keys/operator/model register` end to end against a devnet started by the CLI."""

from __future__ import annotations

import json

import pytest

from tessera.cli.main import main

pytestmark = pytest.mark.integration


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_devnet_deploy_register_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.delenv("TESSERA_DEPLOYMENT", raising=False)
    monkeypatch.delenv("TESSERA_RPC_URL", raising=False)
    monkeypatch.setenv("TESSERA_KEY_PASSWORD", "pw")
    assert run(capsys, "chain", "up", "--port", "0")[0] == 0
    try:
        rc, _, err = run(capsys, "chain", "deploy", "--unbonding", "120", "--max-job-duration", "60",
                         "--min-windows", "10,10")
        assert rc == 1 and "must be longer than a job's lifetime" in err  # the slash-escape rule, before sending
        rc, out, _ = run(capsys, "chain", "deploy", "--unbonding", "600", "--max-job-duration", "60",
                         "--min-windows", "10,10", "--attest-window", "60", "--finalize-grace", "30")
        assert rc == 0 and (tmp_path / "deployment.json").exists()
        hashes = tmp_path / "h.json"
        hashes.write_text(json.dumps({"stage_hashes": ["0x" + "11" * 32] * 5}))
        rc, _, err = run(capsys, "model", "register", "m", "--hashes", str(hashes), "--account", "0")
        assert rc == 1 and "--context-length" in err
        rc, out, _ = run(capsys, "model", "register", "m", "--hashes", str(hashes), "--account", "0",
                         "--context-length", "64")
        assert rc == 0 and "3 blocks, context 64" in out
        assert run(capsys, "keys", "import", "op", "--dev", "4")[0] == 0
        rc, _, err = run(capsys, "operator", "register", "--account", "4", "--model", "m", "--stake", "0.5",
                         "--endpoint", "127.0.0.1:9000", "--blocks", "0:3")
        assert rc == 1 and "stake at least 1 ETH" in err  # friendly error, no traceback
        rc, out, _ = run(capsys, "operator", "register", "--key", "op", "--model", "m", "--stake", "1.5",
                         "--endpoint", "127.0.0.1:9000", "--blocks", "0:2", "--price", "7", "--dtypes", "fp32",
                         "--weights", "exact")
        assert rc == 0, out
        # without --blocks the router's advice picks the under-served block 2
        rc, out, _ = run(capsys, "operator", "register", "--account", "5", "--model", "m", "--stake", "1",
                         "--endpoint", "127.0.0.1:9001", "--max-blocks", "1")
        assert rc == 0 and "blocks [2, 3)" in out, out
        # keystores are slow to decrypt (scrypt), so the same key is used as dev account 4 from here
        rc, out, _ = run(capsys, "operator", "status", "--account", "4", "--json")
        (node,) = json.loads(out.strip().splitlines()[-1])["nodes"]
        assert (node["start"], node["end"], node["stake_wei"], node["reputation"]) == (0, 2, 15 * 10**17, 1.0)
        assert node["price_wei"] == 7
        payout = "0x" + "ab" * 20
        rc, out, _ = run(capsys, "operator", "set-payout", payout, "--account", "4")
        assert rc == 0 and payout.lower() in out.lower()
        assert run(capsys, "operator", "stake-add", "0.5", "--account", "4")[0] == 0
        assert run(capsys, "operator", "unbond", "--account", "4")[0] == 0
        rc, _, err = run(capsys, "operator", "withdraw", "--account", "4")
        assert rc == 1 and "NodeStillBonded" in err
        rc, out, _ = run(capsys, "chain", "status", "--json")
        assert json.loads(out)["reachable"] is True
    finally:
        assert run(capsys, "chain", "down")[0] == 0
    rc, out, _ = run(capsys, "chain", "status", "--json")
    assert json.loads(out)["devnet_pid"] is None
