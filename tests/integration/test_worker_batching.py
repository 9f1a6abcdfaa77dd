"""Concurrent sessions through a 3-process ring of a tiny Llama: each stage runs the sessions' decode
steps as batches, and every session still gets what it gets alone (transformers' greedy tokens, its
own reproducible samples); a forged step inside a batch is refused as forged while the others go on."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._procs import bench_key, free_port, ring_route, workers  # noqa: E402
from proto.types import JobId  # noqa: E402
from worker import codec  # noqa: E402
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView  # noqa: E402
from worker.ring import run_replica  # noqa: E402
from worker.scheduler import scheduler_for  # noqa: E402
from worker.shard import load_stage  # noqa: E402
from worker.shard.tiny import save_tiny_model  # noqa: E402
from worker.signing import Signer  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from peers import HeldStream, Sender  # noqa: E402

pytestmark = pytest.mark.integration
SPANS = [(0, 1), (1, 3), (3, 4)]
SESSIONS = 6
TOKENS = 16
SAMPLED = 5  # this job samples at temperature 0.8


def _prompt(j: int) -> list[int]:
    return torch.randint(3, 256, (4 + j,), generator=torch.Generator().manual_seed(j)).tolist()


def _params(j: int) -> GenParams:
    extra = {"temperature_milli": 800, "seed": 99} if j == SAMPLED else {}
    return GenParams(max_tokens=TOKENS, codec=codec.FP32, **extra)


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batching")
    d = save_tiny_model("llama", tmp / "llama")
    ports = [0] + [free_port() for _ in SPANS[1:]]
    routes = [ring_route(j + 1, "llama", 4, SPANS, ports, _params(j)) for j in range(SESSIONS)]
    routes.append(ring_route(50, "llama", 4, SPANS, ports, GenParams(max_tokens=TOKENS, codec=codec.FP32)))
    with workers(d, SPANS, ports, routes, tmp, extra=("--session-ttl-s", "60")):
        yield {"dir": d, "ports": ports, "view": StaticPlanView(routes), "head": load_stage(d, *SPANS[0])}


def _concurrent(ring) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(SESSIONS)]
    go = threading.Barrier(SESSIONS)

    def one(j):
        go.wait()
        out[j] = run_replica(ring["head"], ring["view"].route(JobId(j + 1)), 0, _prompt(j), Signer(bench_key(0)))

    threads = [threading.Thread(target=one, args=(j,)) for j in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_concurrent_sessions_are_batched_and_each_gets_its_own_tokens(ring):
    full = AutoModelForCausalLM.from_pretrained(ring["dir"]).eval()
    full.generation_config.eos_token_id = None
    head = scheduler_for(ring["head"])
    before = head.batched_steps
    got = _concurrent(ring)
    for j in range(SESSIONS):
        if j == SAMPLED:
            continue
        want = full.generate(torch.tensor([_prompt(j)]), max_new_tokens=TOKENS, do_sample=False, pad_token_id=0)
        assert got[j] == want[0, 4 + j:].tolist(), f"session {j}"
    alone = run_replica(load_stage(ring["dir"], 0, 4), _whole(ring["view"].route(JobId(SAMPLED + 1))), 0,
                        _prompt(SAMPLED), Signer(bench_key(0)))
    assert got[SAMPLED] == alone
    assert head.batched_steps - before > SESSIONS  # the head's decode steps ran together


def _whole(route: JobRoute) -> JobRoute:
    """The same job on one node serving every block (no network)."""
    h = route.replicas[0][0]
    return JobRoute(route.job_id, route.model, route.num_blocks, ((HopRoute(h.node, "-", 0, 4),),), route.params)


def test_a_forged_step_in_a_batch_is_refused_and_the_other_sessions_go_on(ring):
    """A decode step whose signature does not verify reaches the tail while honest sessions' steps
    are batched there: its stream ends PERMISSION_DENIED, and every honest session is unharmed."""
    peer = Sender(50, key=bench_key(1), hop=1)
    stream = HeldStream(grpc.insecure_channel(f"127.0.0.1:{ring['ports'][2]}"))
    stream.send(peer.open())
    x = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(3))
    stream.send(peer.step(0, codec.encode(x, codec.FP32)))
    forged = peer.step(1, codec.encode(x[:, -1:], codec.FP32))
    forged.signature = forged.signature[:10] + bytes([forged.signature[10] ^ 1]) + forged.signature[11:]
    result: dict = {}

    def honest():
        result["got"] = _concurrent(ring)

    head = scheduler_for(ring["head"])
    before = head.batched_steps
    t = threading.Thread(target=honest)
    t.start()
    deadline = time.monotonic() + 60
    while head.batched_steps == before and time.monotonic() < deadline:  # the honest sessions decode in batches
        time.sleep(0.005)
    with pytest.raises(grpc.RpcError) as err:
        stream.send(forged)
    t.join(120)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    full = AutoModelForCausalLM.from_pretrained(ring["dir"]).eval()
    want = full.generate(torch.tensor([_prompt(0)]), max_new_tokens=TOKENS, do_sample=False, pad_token_id=0,
                         eos_token_id=None)
    assert result["got"][0] == want[0, 4:].tolist()
    assert all(len(ids) == TOKENS for ids in result["got"])
