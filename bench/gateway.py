"""Time to first token through ``tessera gateway`` (the official ``openai`` client, streaming) vs
``tessera job submit --wait`` (the CLI, streaming to stderr), for the same job on the same devnet.

A DevCluster (anvil, SmolLM2 in two spans, two nodes per span) serves both; each run is one job
of two 2-hop replicas, paid through escrow and settled. Gateway and CLI runs alternate, ``--runs``
of each; medians count and every run is kept. The CLI's time includes its own start-up (what a
user waits for); the gateway is a running server.

    python -m bench.gateway --json [--runs 3] [--tokens 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench._out import emit
from chain.devnet import free_port
from tessera.devcluster import DevCluster

PROMPT = "The capital of France is"
GATEWAY_ACCOUNT = 10  # not a node (1..8) nor the cluster's requester (9)
FEE = "0.02"


def _start_gateway(c: DevCluster, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(c.workdir / "gateway.log", "w")  # noqa: SIM115 (the process holds it)
    proc = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", "gateway", "--account", str(GATEWAY_ACCOUNT),
                             "--port", str(port), "--replicas", "2", "--fee", FEE, "--codec", "fp32"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    t_end = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            return proc, base
        except OSError:
            if proc.poll() is not None or time.monotonic() > t_end:
                proc.kill()
                raise SystemExit(f"gateway did not start; see {c.workdir / 'gateway.log'}") from None
            time.sleep(0.3)


def _gateway_run(base: str, tokens: int) -> dict:
    import openai  # lazy: the benchmark's own client, as a user would have it

    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", timeout=600)
    t0 = time.monotonic()
    first, chunks = None, 0
    for chunk in client.completions.create(model="smollm2-135m", prompt=PROMPT, max_tokens=tokens, stream=True):
        if chunk.choices and chunk.choices[0].text:
            chunks += 1
            if first is None:
                first = time.monotonic() - t0
    return {"first_token_s": round(first, 3), "total_s": round(time.monotonic() - t0, 3), "text_chunks": chunks}


def _cli_run(c: DevCluster, env: dict, tokens: int) -> dict:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", "job", "submit", "--model", c.model,
                             "--prompt", PROMPT, "--max-tokens", str(tokens), "--replicas", "2", "--fee", FEE,
                             "--codec", "fp32", "--account", "9", "--wait"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    for line in proc.stderr:
        if first is None and line.startswith("text (unverified"):
            first = time.monotonic() - t0
    if proc.wait(60) != 0 or first is None:
        raise SystemExit("job submit failed or streamed no text")
    return {"first_token_s": round(first, 3), "total_s": round(time.monotonic() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--save", default=None)
    a = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {"gateway": [], "job_submit": []}
    with tempfile.TemporaryDirectory() as tmp, DevCluster(tmp, model="smollm2-135m", copies=2) as c:
        c.start()
        env = {**c.env, "TESSERA_RPC_URL": c.net.rpc_url}
        gw, base = _start_gateway(c, env)
        try:
            _gateway_run(base, 2)  # warm: the gateway's first request loads its tokenizer
            for _ in range(a.runs):
                runs["gateway"].append(_gateway_run(base, a.tokens))
                runs["job_submit"].append(_cli_run(c, env, a.tokens))
        finally:
            gw.terminate()
            gw.wait(10)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("first_token_s", "total_s")} for k, v in runs.items()}
    return emit({
        "bench": "gateway", "model": "smollm2-135m", "tokens": a.tokens, "replicas": 2, "hops_per_replica": 2,
        "runs": runs, "median": med,
        "first_token_gateway_vs_job_submit": round(med["gateway"]["first_token_s"]
                                                   / med["job_submit"]["first_token_s"], 3),
        "note": "each run is a whole paid job on anvil; job submit's time includes the CLI's start-up",
    }, a.save, a.json)


if __name__ == "__main__":
    sys.exit(main())
