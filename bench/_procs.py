"""Helpers shared by the worker benchmarks: start worker processes on loopback and stop them."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from eth_account import Account

from chain.devnet import free_port  # noqa: F401 (re-exported)
from proto.types import JobId, NodeId
from tessera.procs import stop_processes
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView

REPO = Path(__file__).resolve().parent.parent
WORKER = [sys.executable, "-m", "tessera.cli.main", "operator", "run"]  # a worker process (add --plan-file ...)


def bench_key(i: int) -> str:
    """Deterministic throw-away node keys for benchmarks (never fund them)."""
    return "0x" + f"{0xBE7C0000 + i:064x}"


def even_spans(num_blocks: int, stages: int) -> list[tuple[int, int]]:
    """``stages`` contiguous half-open spans covering ``[0, num_blocks)`` as evenly as possible."""
    cuts = [round(i * num_blocks / stages) for i in range(stages + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def ring_route(job: int, model: str, num_blocks: int, spans, ports, params: GenParams,
               kind: str = "causal-lm") -> JobRoute:
    hops = tuple(HopRoute(NodeId(Account.from_key(bench_key(i)).address), f"127.0.0.1:{p}", a, b)
                 for i, ((a, b), p) in enumerate(zip(spans, ports)))
    return JobRoute(JobId(job), model, num_blocks, (hops,), params, kind)


@contextmanager
def workers(model_dir: Path, spans, ports, routes: list[JobRoute], workdir: Path, threads: int = 1,
            device: str = "cpu", extra: tuple[str, ...] = ()):
    """Start one ``tessera operator run --plan-file`` per span (skipping hop 0, the caller's); always stop them."""
    plan = workdir / "plan.json"
    StaticPlanView(routes).to_file(plan)
    procs = []
    try:
        for i, ((a, b), port) in enumerate(zip(spans, ports)):
            if i == 0:
                continue
            log = open(workdir / f"worker{i}.log", "w")
            cmd = [*WORKER, "--plan-file", str(plan), "--model-dir", str(model_dir), "--start", str(a),
                   "--end", str(b), "--port", str(port), "--private-key", bench_key(i), "--threads", str(threads),
                   "--device", device, *extra]
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True))
        deadline = time.time() + 300
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("READY") or time.time() > deadline:
                raise RuntimeError(f"a worker failed to start; see {workdir}/worker*.log")
        yield procs
    finally:
        stop_processes(procs)
