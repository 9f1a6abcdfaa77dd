"""Failover through real worker processes on 127.0.0.1 (tiny model, static plan): a hop is
stalled or killed mid-generation and the replica finishes on its standby with the output it
would have had without the fault (greedy and sampled, fp32 and int8 activations)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from proto.types import JobId, NodeId
from tessera.procs import stop_processes
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView
from worker.ring import run_replica
from worker.signing import Signer

sys.path.insert(0, str(Path(__file__).parent))
from test_worker_tiny import TinyLM, TinyStage, save

from chain.devnet import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tessera.cli.main", "operator", "run"]
LOADER = str(Path(__file__).parent / "test_worker_tiny.py") + ":load_stage"
PROMPT = [5, 17, 42, 8]
KEYS = ["0x" + f"{i + 21:064x}" for i in range(5)]  # head, middle, middle's standby, tail, tail's standby
SPANS = [(0, 2), (2, 5), (2, 5), (5, 6), (5, 6)]
MIDDLE, MIDDLE_STANDBY, TAIL, TAIL_STANDBY = 1, 2, 3, 4
PARAMS = {1: GenParams(max_tokens=12, codec=codec.FP32),
          2: GenParams(max_tokens=12, temperature_milli=900, seed=77, codec=codec.INT8_OUTLIER)}


def _route(job: int, ports: list[int]) -> JobRoute:
    h = [HopRoute(NodeId(Account.from_key(k).address), f"127.0.0.1:{p}", a, b)
         for k, p, (a, b) in zip(KEYS, ports, SPANS)]
    return JobRoute(JobId(job), "tiny", 6, ((h[0], h[MIDDLE], h[TAIL]),), PARAMS[job % 10],
                    standbys=((h[MIDDLE_STANDBY], h[TAIL_STANDBY]),))


@pytest.fixture
def ring(tmp_path):
    """Four worker processes (middle, its standby, tail, its standby); the test is the head."""
    model_dir = save(tmp_path / "tiny")
    ports = [0] + [free_port() for _ in range(4)]
    view = StaticPlanView([_route(job, ports) for job in (1, 2, 11, 12)])
    plan = tmp_path / "plan.json"
    view.to_file(plan)
    procs = []
    try:
        for (a, b), key, port in zip(SPANS[1:], KEYS[1:], ports[1:]):
            cmd = [*WORKER, "--plan-file", str(plan), "--model-dir", str(model_dir), "--start", str(a), "--end",
                   str(b), "--port", str(port), "--private-key", key, "--loader", LOADER]
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, start_new_session=True))
        for p in procs:
            line = p.stdout.readline()
            assert line.startswith("READY"), f"worker did not start: {line!r}"
        yield {"view": view, "procs": [None, *procs], "model": TinyLM().eval()}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGCONT)
        stop_processes(procs)


def _head(ring, job: int, fault=None, at: int = 4) -> list[int]:
    """Run the replica of ``job``; ``fault(proc)`` is applied once the head has seen step ``at``."""

    def on_token(step, _ids):
        if fault is not None and step == at:
            fault()

    stage = TinyStage(ring["model"], *SPANS[0])
    return run_replica(stage, ring["view"].route(JobId(job)), 0, PROMPT, Signer(KEYS[0]),
                       config=WorkerConfig(hop_timeout_s=2.0), on_token=on_token)


def test_a_stalled_middle_hop_fails_over_and_the_greedy_output_is_unchanged(ring, caplog):
    middle = ring["procs"][MIDDLE]
    with caplog.at_level(logging.WARNING, logger="worker.ring.head"):
        ids = _head(ring, 1, lambda: os.killpg(middle.pid, signal.SIGSTOP))
    assert ids == ring["model"].greedy(PROMPT, 12)
    assert "continuing at step" in caplog.text and "route 0xd" in caplog.text  # words 0 2 3: head, B', tail


def test_a_killed_tail_fails_over_and_the_sampled_int8_output_is_unchanged(ring, caplog):
    want = _head(ring, 2)  # the same job settings, no fault
    tail = ring["procs"][TAIL]
    with caplog.at_level(logging.WARNING, logger="worker.ring.head"):
        ids = _head(ring, 12, lambda: os.killpg(tail.pid, signal.SIGKILL))
    assert ids == want and ids != ring["model"].greedy(PROMPT, 12)  # it really samples
    assert "route 0x13" in caplog.text  # words 0 1 4: head, middle, the tail's standby


def test_both_hops_fail_one_after_the_other(ring):
    middle, tail = ring["procs"][MIDDLE], ring["procs"][TAIL]
    state = {"n": 0}

    def fault():  # the middle at step 4; the tail when the resumed replica reaches step 4 again
        state["n"] += 1
        os.killpg((middle if state["n"] == 1 else tail).pid, signal.SIGKILL)

    stage = TinyStage(ring["model"], *SPANS[0])
    seen: list[int] = []

    def on_token(step, _ids):
        seen.append(step)
        if step in (3, 7):
            fault()

    ids = run_replica(stage, ring["view"].route(JobId(11)), 0, PROMPT, Signer(KEYS[0]),
                      config=WorkerConfig(hop_timeout_s=2.0), on_token=on_token)
    assert ids == ring["model"].greedy(PROMPT, 12) and state["n"] == 2
    assert seen == list(range(12))  # every step previewed once, none twice
