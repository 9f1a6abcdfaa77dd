"""The requester's and operator's experience over HTTP, against real nodes on anvil: the official
``openai`` client through ``tessera gateway`` (streaming and not), token streaming in ``job submit
--wait``, the explorer in a real headless Chromium, and each node's /metrics and /health.

One cluster for the module: SmolLM2 in two spans, two nodes per span (two 2-hop replicas).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from chain.devnet import free_port
from tessera.devcluster import DevCluster

pytestmark = pytest.mark.e2e

GATEWAY_ACCOUNT = 10  # not a node (1..8) nor the cluster's requester (9): its own nonces
TOKENS = 8
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "explorer.png"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with DevCluster(tmp_path_factory.mktemp("gw"), model="smollm2-135m", copies=2) as c:
        c.start()
        yield c
    # the latencies measured below (shown with -s): the gateway's first token vs `job submit --wait`'s
    print("\ngateway/job timings (s):", json.dumps({k: round(v, 2) for k, v in TIMINGS.items() if v}))


@pytest.fixture(scope="module")
def gateway(cluster):
    port = free_port()
    env = {**cluster.env, "TESSERA_RPC_URL": cluster.net.rpc_url}
    log = open(cluster.workdir / "gateway.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", "gateway", "--account", str(GATEWAY_ACCOUNT),
                             "--port", str(port), "--replicas", "2", "--fee", "0.02", "--codec", "fp32"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        t_end = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (cluster.workdir / "gateway.log").read_text()[-3000:]
                assert time.monotonic() < t_end, "gateway did not answer /health within 120 s"
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _reference(model_dir, prompt: str, n: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def _openai(base: str):
    import openai

    return openai.OpenAI(base_url=base + "/v1", api_key="unused", timeout=600, max_retries=0)


def test_openai_client_completion_is_paid_settled_and_equals_transformers(cluster, gateway):
    client = _openai(gateway)
    assert [m.id for m in client.models.list().data] == ["smollm2-135m"]
    t0 = time.monotonic()
    res = client.completions.create(model="smollm2-135m", prompt="The capital of France is", max_tokens=TOKENS)
    TIMINGS["completion_total_s"] = time.monotonic() - t0
    t = res.model_extra["tessera"]
    assert res.choices[0].text == _reference(cluster.manifest.directory, "The capital of France is", TOKENS)
    assert t["outcome"] == "agreed" and t["verified"] and t["consensus"] == "2/2"
    paid = sum(int(v) for v in t["payouts"].values())
    assert len(t["payouts"]) == 4 and paid + int(t["refund_wei"]) == 2 * 10**16  # four nodes paid; the rest,
    assert int(t["refund_wei"]) >= 2 * 10**15  # the unused verification reserve, came back to the requester
    for tx in t["tx"].values():  # real transactions on this chain
        assert cluster.w3.eth.get_transaction_receipt(tx)["status"] == 1
    assert res.usage.completion_tokens == TOKENS


def test_openai_client_chat_streams_tokens_before_the_job_settles(cluster, gateway):
    from transformers import AutoTokenizer

    client = _openai(gateway)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    t0 = time.monotonic()
    first = None
    chunks = []
    for chunk in client.chat.completions.create(model="smollm2-135m", messages=messages, max_tokens=TOKENS,
                                                stream=True):
        chunks.append(chunk)
        if first is None and chunk.choices[0].delta.content:
            first = time.monotonic() - t0
    total = time.monotonic() - t0
    TIMINGS["chat_stream_first_token_s"], TIMINGS["chat_stream_total_s"] = first, total
    extras = [c.model_extra.get("tessera") or {} for c in chunks]
    preview = [c for c, x in zip(chunks, extras) if c.choices[0].delta.content and x.get("verified") is False]
    assert len(preview) >= 2, "tokens should arrive one by one while the job runs"
    assert first < 0.8 * total  # the text came well before the settlement
    final = extras[-1]
    assert final["outcome"] == "agreed" and final["preview_matches"] and chunks[-1].choices[0].finish_reason
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    tok = AutoTokenizer.from_pretrained(cluster.manifest.directory)
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>")  # the model's own chat template ...
    assert text == _reference(cluster.manifest.directory, prompt, TOKENS)  # ... is what the nodes ran
    assert {x.get("job_id") for x in extras} == {final["job_id"]}


def test_gateway_errors_are_openai_shaped(gateway):
    import openai

    client = _openai(gateway)
    with pytest.raises(openai.NotFoundError, match="not served by this gateway"):
        client.completions.create(model="nosuch", prompt="hi", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens must be"):
        client.completions.create(model="smollm2-135m", prompt="hi", max_tokens=100_000)


def test_job_submit_wait_streams_the_text_as_it_is_generated(cluster):
    env = {**cluster.env, "TESSERA_RPC_URL": cluster.net.rpc_url}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera.cli.main", "job", "submit", "--model", cluster.model, "--prompt",
         "The capital of France is", "--max-tokens", str(TOKENS), "--replicas", "2", "--fee", "0.02", "--codec",
         "fp32", "--account", "9", "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if first is None and line.startswith("text (unverified"):
            first = time.monotonic() - t0
    out = proc.stdout.read()
    assert proc.wait(60) == 0, "".join(lines)[-3000:]
    TIMINGS["job_submit_first_token_s"], TIMINGS["job_submit_total_s"] = first, time.monotonic() - t0
    assert first is not None, "".join(lines)
    streamed = [ln for ln in lines if ln.startswith("text (unverified")]
    assert " Paris" in streamed[-1] and "output: ' Paris" in out


def test_every_node_serves_metrics_and_health(cluster):
    heads = 0
    for node in cluster.nodes:
        base = f"http://127.0.0.1:{node.metrics_port}"
        health = json.loads(urllib.request.urlopen(base + "/health", timeout=5).read())
        assert health["status"] == "ready" and health["node"] == node.address
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert "tessera_node_active 1.0" in text
        heads += sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith("tessera_head_tokens_total"))
    assert heads >= 2 * 3 * TOKENS  # the heads of the jobs above produced every token they streamed


def test_explorer_in_headless_chromium_shows_nodes_coverage_and_jobs(cluster, gateway, tmp_path):
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (`apt-get install -y chromium` as root; "
                    "`make browser` does it); the explorer's browser test needs it")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(gateway + "/explorer")
            page.wait_for_selector("table.nodes tbody tr", timeout=30_000)
            rows = page.locator("table.nodes tbody tr")
            assert rows.count() == len(cluster.nodes)
            body = page.inner_text("body")
            for node in cluster.nodes:
                assert node.address in body
            assert "blocks covered by live nodes: 30/30" in body
            assert page.locator("svg rect.cov").count() == 30 and page.locator("svg rect.gap").count() == 0
            page.wait_for_selector("tr.job", timeout=30_000)
            jobs = page.locator("tr.job")
            assert jobs.count() >= 3 and "agreed" in jobs.first.inner_text()
            page.wait_for_selector("#live.on", timeout=15_000)  # live updates connected
            jobs.last.click()
            page.wait_for_selector("#doutcome", timeout=15_000)
            assert page.inner_text("#doutcome") == "agreed"
            assert "Paris" in page.inner_text("#doutput")
            assert page.locator("#dbody .ok", has_text="paid").count() == 4
            shot = tmp_path / "explorer.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("TESSERA_SAVE_SCREENSHOT"):
                shutil.copyfile(shot, SCREENSHOT)
        finally:
            browser.close()


def test_a_node_refuses_another_port_and_stops_once_unbonded(cluster):
    """Runs last: it takes one node out of the cluster."""
    node = cluster.nodes[-1]
    env = {**cluster.env, "TESSERA_RPC_URL": cluster.net.rpc_url}
    second = subprocess.run([sys.executable, "-m", "tessera.cli.main", "operator", "run", "--config", str(node.config),
                             "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1 and f"--port {node.port}" in second.stderr, second.stderr[-2000:]
    assert "READY" not in second.stdout
    assert main_cli(env, "operator", "unbond", "--account", str(node.index)).returncode == 0
    assert node.proc.wait(60) == 3  # it settled nothing open, said why and stopped
    log = node.log.read_text()
    assert "is unbonding on chain; its stake is withdrawable from" in log and "UTC" in log


def main_cli(env, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tessera.cli.main", *argv], env=env, capture_output=True, text=True,
                          timeout=120)
