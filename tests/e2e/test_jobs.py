"""The product end to end: on-chain jobs served by sharded workers, paid when the replicas agree,
judged by a contract-drawn verifier when they do not.

Nodes of ``lm_cluster`` (see conftest): positions 0, 2, 4 serve the first half
of SmolLM2, 1, 3, 5 the second; each replica is one of each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal

import pytest
import torch
from web3 import Web3

from chain.devnet import advance_time
from proto.types import VERDICT_HONEST, decode_output, verdict_faulty
from tessera import requester

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"
TOKENS = 12
FEE = 3 * 10**16


def _replicas(c, *pairs):
    return c.plan(*[[c.nodes[a], c.nodes[b]] for a, b in pairs])


def _earnings(c, extra=()) -> dict[str, int]:
    return {a: c.client().get_node(a).earnings for a in [n.address for n in c.nodes] + list(extra)}


def _credited(c, before: dict[str, int]) -> dict[str, int]:
    """Earnings credited since ``before``, for the nodes that got any."""
    after = _earnings(c, before)
    return {a: after[a] - before[a] for a in after if after[a] != before[a]}


def test_honest_job_via_cli_is_unanimous_and_matches_transformers(lm_cluster, reference_tokens):
    c = lm_cluster
    before = _earnings(c)
    env = {**c.env, "TESSERA_RPC_URL": c.net.rpc_url}
    proc = subprocess.run(
        [sys.executable, "-m", "tessera.cli.main", "job", "submit", "--model", c.model, "--prompt", PROMPT,
         "--max-tokens", str(TOKENS), "--replicas", "3", "--fee", "0.03", "--codec", "fp32", "--account", "9",
         "--wait", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["outcome"] == "agreed" and res["winners"] == [0, 1, 2]
    assert [r["verdict"] for r in res["replicas"]] == ["honest"] * 3
    ids = decode_output(bytes.fromhex(res["output_hex"]))
    assert ids == reference_tokens(c.manifest.directory, PROMPT, TOKENS)
    assert "Paris" in res["text"]
    paid = _credited(c, before)
    assert len(paid) == 6 and sum(paid.values()) + int(res["refund"]) == FEE, paid  # all six served, all paid
    assert int(res["refund"]) >= FEE // 10  # the verification reserve came back
    assert {a: str(v) for a, v in paid.items()} == res["payouts"]  # what we print is what the chain paid
    settled = c.client().settlement(res["job_id"])  # ... and what its JobFinalized event says
    assert settled.payouts == paid and settled.tx_hash == res["tx"]["finalize"]
    assert [h["outcome"] for h in res["hops"]] == ["paid"] * 6


def test_example_requester_script_with_router_over_http(lm_cluster):
    """examples/requester.py: plain web3 + a plan from `tessera router serve`."""
    import urllib.request

    from chain.devnet import dev_key, free_port

    c = lm_cluster
    before = _earnings(c)
    port = free_port()
    env = {**c.env, "TESSERA_RPC_URL": c.net.rpc_url}
    router = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", "router", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert router.poll() is None, router.stderr.read()
                time.sleep(0.2)
        out = subprocess.run(
            [sys.executable, "examples/requester.py", "--rpc-url", c.net.rpc_url, "--deployment",
             c.env["TESSERA_DEPLOYMENT"], "--router", f"http://127.0.0.1:{port}", "--key", dev_key(9),
             "--prompt", PROMPT, "--max-tokens", "6", "--tokenizer",
             str(c.manifest.directory / "tokenizer.json")], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "output: ' Paris." in out.stdout
        assert "agreed by replicas [0, 1, 2] of 3" in out.stdout
        printed = dict(line.split()[:3:2] for line in out.stdout.splitlines() if " paid: +" in line)
        assert {a: int(Web3.to_wei(Decimal(v[1:]), "ether")) for a, v in printed.items()} == _credited(c, before)
    finally:
        router.terminate()
        router.wait(10)


def _until(what, check, timeout_s: float = 300.0):
    t_end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < t_end, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_corrupt_node_is_named_by_a_drawn_verifier_and_slashed(lm_cluster, reference_tokens):
    c = lm_cluster
    bad = c.add_node(c.nodes[1].span, byzantine=True)
    verifier = c.client(8)  # a full node of the model, outside every plan: the verifier pool
    verifier.register_node(c.model, 0, c.manifest.num_blocks, "127.0.0.1:1", 10**18)
    try:
        cl = c.client()
        plan = c.plan([c.nodes[0], c.nodes[1]], [c.nodes[2], c.nodes[3]], [c.nodes[4], bad])
        rep_before = cl.get_node(bad.address).reputation
        stake_before = cl.get_node(bad.address).stake
        job = cl.submit_job(plan, PROMPT.encode(), TOKENS, FEE, codec="int8-outlier")
        # the tails finalize (a dispute) and draw the verifier from the next block: no help needed
        _until("the draw", lambda: cl.get_job(job).status == "attesting")
        assert cl.verifiers_of(job) == (verifier.address,)
        verifier.attest(job, [VERDICT_HONEST, VERDICT_HONEST, verdict_faulty(1)])  # replica 2's tail
        res = requester.follow(cl, job, timeout_s=120)
        assert res.outcome == "verified" and res.winners == (0, 1)
        assert [v.verdict for v in res.replicas()] == ["honest", "honest", "faulty"]
        assert bad.address in res.replicas()[2].detail and res.slashes == {bad.address: 10**17}
        assert bad.address not in res.payouts and c.nodes[4].address not in res.payouts
        (v,) = res.settlement.verifiers
        assert v.node == verifier.address and v.outcome == "majority" and v.paid >= 10**17  # slash + reserve
        assert cl.get_node(bad.address).reputation == pytest.approx(rep_before * 0.8)
        assert cl.get_node(bad.address).stake == stake_before - 10**17
        assert decode_output(res.output) == reference_tokens(c.manifest.directory, PROMPT, TOKENS)
        assert res.reveals[2] != res.output_hash  # the corrupt replica revealed something else
    finally:
        c.stop_node(bad)
        verifier.request_unbond()


def test_node_killed_mid_job_still_settles_and_locks_nothing(lm_cluster):
    c = lm_cluster
    cl = c.client()
    victim = c.nodes[5]  # tail of replica 2
    plan = _replicas(c, (0, 1), (2, 3), (4, 5))
    c.kill_node(victim)
    try:
        market_before = cl.balance(c.deployment.job_market)
        before = _earnings(c)
        job = cl.submit_job(plan, PROMPT.encode(), TOKENS, FEE, commit_window_s=120, reveal_window_s=60)
        t_end = time.monotonic() + 300
        while requester.progress(cl, job).committed < 2 and time.monotonic() < t_end:
            time.sleep(0.5)
        assert requester.progress(cl, job).committed == 2
        advance_time(c.w3, 121)  # the dead tail never commits: let the commit window close
        while requester.progress(cl, job).revealed < 2 and time.monotonic() < t_end:
            time.sleep(0.5)  # the live tails reveal
        advance_time(c.w3, 61)  # and the reveal window closes: anyone may finalize
        res = requester.follow(cl, job, timeout_s=120)
        assert res.outcome == "agreed" and res.winners == (0, 1)
        assert res.payouts == _credited(c, before) and sum(res.payouts.values()) + res.refund == FEE
        assert res.slashes == {}  # the dead tail never committed: no evidence, no slash
        # the whole fee left escrow: paid out, or credited back to the requester (withdrawable)
        assert cl.balance(c.deployment.job_market) == market_before + res.refund
        assert cl.get_job(job).status == "finalized"
    finally:
        c.start_node(victim)


def test_restarted_worker_misses_no_job_and_runs_none_twice(lm_cluster):
    c = lm_cluster
    cl = c.client()
    head = c.nodes[0]
    plan = _replicas(c, (0, 1), (2, 3), (4, 5))
    first = cl.submit_job(plan, PROMPT.encode(), 4, FEE)
    assert requester.follow(cl, first, timeout_s=300).winners == (0, 1, 2)
    c.stop_node(head)
    queued = [cl.submit_job(plan, p.encode(), 4, FEE) for p in ("One, two,", "Water boils at")]
    c.start_node(head)
    for job in queued:
        assert requester.follow(cl, job, timeout_s=300).winners == (0, 1, 2)
    log = head.log.read_text()
    for job in (first, *queued):
        assert log.count(f"job {job} replica 0: head done") == 1, f"job {job} ran {log.count(f'job {job} replica 0: head done')} times"


def test_image_job_through_sharded_classifier(vision_cluster):
    from worker.shard import load_full
    from worker.vision.data import digits_test_split, encode_images

    c = vision_cluster
    images, labels = digits_test_split()
    cl = c.client()
    plan = _replicas(c, (0, 1), (2, 3), (4, 5))
    job = cl.submit_job(plan, encode_images(images[:4]), 1, FEE, codec="int8-outlier")
    res = requester.follow(cl, job, timeout_s=300)
    assert res.outcome == "agreed" and res.winners == (0, 1, 2)
    whole = load_full(c.manifest.directory)
    with torch.inference_mode():
        expect = whole(images[:4]).argmax(-1).tolist()
    assert decode_output(res.output) == expect
    assert sum(e == int(l) for e, l in zip(expect, labels[:4])) >= 3  # a trained classifier, not noise


def test_embedding_job_via_cli_is_agreed_on_its_grid(embed_cluster):
    """An encoder as a job kind on v2: `job submit` sends one step with fp32 activations (the CLI's
    defaults for an embedding model), both replicas commit the same grid words, and they are the
    unsplit model's embedding."""
    from proto.types import embedding_values, embedding_words
    from worker.node.payload import head_inputs
    from worker.shard import load_full

    c = embed_cluster
    text = "Sharded sentence embeddings, settled on chain."
    env = {**c.env, "TESSERA_RPC_URL": c.net.rpc_url}
    proc = subprocess.run(
        [sys.executable, "-m", "tessera.cli.main", "job", "submit", "--model", c.model, "--prompt", text,
         "--replicas", "2", "--account", "9", "--wait", "--json"], capture_output=True, text=True, env=env,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["outcome"] == "agreed" and res["winners"] == [0, 1]
    req = c.client().get_request(res["job_id"])
    assert req.max_tokens == 1 and req.codec == 0  # one pass, fp32 activations
    words = decode_output(bytes.fromhex(res["output_hex"]))
    ids = head_inputs("embedding", c.manifest.directory, text.encode())
    with torch.inference_mode():
        assert words == embedding_words(load_full(c.manifest.directory)(torch.tensor([ids])).flatten().tolist())
    assert len(words) == 384 and abs(sum(v * v for v in embedding_values(words)) - 1) < 0.02  # unit norm, on a grid
    assert res["text"].startswith("embedding of 384 values")
