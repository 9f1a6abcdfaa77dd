"""`tessera --help`, every group's and command's --help, and light commands start fast: none of
them imports torch, transformers, web3, eth-account, grpc or the web stack (seconds each on a
loaded 2-core machine), only the command that needs one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "transformers", "web3", "eth_account", "grpc", "fastapi", "uvicorn", "rich")

CODE = """
import contextlib, io, json, sys, time
from tessera.cli.main import main
argvs = json.loads(sys.argv[1])
out = {}
for argv in argvs:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv)
    out[" ".join(argv)] = [rc, round(time.perf_counter() - t0, 3)]
print(json.dumps({"runs": out, "loaded": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def _run(argvs: list[list[str]]) -> dict:
    proc = subprocess.run([sys.executable, "-c", CODE, json.dumps(argvs)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_of_every_group_and_command_loads_nothing_heavy():
    groups = ["chain", "keys", "model", "operator", "router", "job", "bench"]
    argvs = [["--help"], ["gateway", "--help"], ["demo", "--help"]] + [[g, "--help"] for g in groups]
    argvs += [["job", c, "--help"] for c in ("submit", "list", "balance", "withdraw", "finalize", "cancel")]
    argvs += [["chain", c, "--help"] for c in ("up", "fund", "time-travel", "deploy")]
    argvs += [["operator", c, "--help"] for c in ("register", "status", "stake-add")]
    res = _run(argvs)
    assert all(rc == 0 for rc, _ in res["runs"].values()), res["runs"]
    assert res["loaded"] == [], f"--help imported {res['loaded']}"


def test_keys_list_reads_keystores_without_web3(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    res = _run([["keys", "list"]])
    assert res["runs"]["keys list"][0] == 0 and res["loaded"] == []


def test_help_shows_examples():
    res = subprocess.run([sys.executable, "-m", "tessera.cli.main", "job", "submit", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert "Examples:" in res.stdout and "tessera job submit --model" in res.stdout


def test_keys_new_reads_a_piped_password_quietly(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.delenv("TESSERA_KEY_PASSWORD", raising=False)
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-m", "tessera.cli.main", "keys", "new", "piped"], input="s3cret\n",
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("piped: 0x"), res.stderr
    assert "Warning" not in res.stderr and "password" not in res.stderr.lower()
    from chain.keys import load_key

    assert load_key("piped", "s3cret").address == res.stdout.split()[1]  # the piped line is the password
