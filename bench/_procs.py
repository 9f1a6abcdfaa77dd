"""Helpers shared by the worker benchmarks: start worker processes on loopback and stop them."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from eth_account import Account

from chain.ports import free_port  # noqa: F401 (re-exported)
from proto.types import JobId, NodeId
from tessera.procs import stop_processes
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView
from worker.shard import stage_layout
from worker.shard.weights import tensor_numels

REPO = Path(__file__).resolve().parent.parent
WORKER = [sys.executable, "-m", "tessera.cli.main", "operator", "run"]  # a worker process (add --plan-file ...)


def bench_key(i: int) -> str:
    """Deterministic throw-away node keys for benchmarks (never fund them)."""
    return "0x" + f"{0xBE7C0000 + i:064x}"


def even_spans(num_blocks: int, stages: int) -> list[tuple[int, int]]:
    """``stages`` contiguous half-open spans covering ``[0, num_blocks)`` as evenly as possible."""
    cuts = [round(i * num_blocks / stages) for i in range(stages + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def warmup_runs(given: int | None, device: str) -> int:
    """Untimed runs per level: ``given``, else 1 on an accelerator (its first run at a new batch size is
    cold) and 0 on the CPU (pure)."""
    return given if given is not None else int(device != "cpu")


def add_split_options(ap) -> None:
    """``--stages`` and ``--split`` of a benchmark's ring (read back with :func:`ring_spans`)."""
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--split", choices=("even", "compute"), default="even",
                    help="even: the same number of blocks per stage; compute: the same per-token compute "
                         "(bench._procs.compute_spans: the tail's output layer counts)")


def ring_spans(model_dir, num_blocks: int, stages: int, split: str) -> list[tuple[int, int]]:
    """The spans ``--stages``/``--split`` ask for."""
    return even_spans(num_blocks, stages) if split == "even" else compute_spans(model_dir, stages)


def compute_spans(model_dir, stages: int) -> list[tuple[int, int]]:
    """``stages`` contiguous spans whose largest per-token compute is the smallest possible: a block costs
    its weights' values (one multiply-add each per token), the last block also the output layer's (a
    language model's head: SmolLM2's is 8 blocks' worth), the embedding lookup nothing."""
    layout = stage_layout(model_dir)
    blocks = [[ck for _, ck in b] for b in layout.blocks]
    sizes = tensor_numels(model_dir, {k for b in blocks for k in b} | {ck for _, ck in layout.output})
    cost = [sum(sizes[k] for k in b) for b in blocks]
    cost[-1] += sum(sizes[ck] for _, ck in layout.output)
    return balanced_spans(cost, stages)


def balanced_spans(cost: list[int], stages: int) -> list[tuple[int, int]]:
    """Contiguous spans of ``cost``'s blocks, ``stages`` of them, minimising the largest span's total."""
    n = len(cost)
    if not 1 <= stages <= n:
        raise ValueError(f"cannot cut {n} blocks into {stages} non-empty spans")
    pre = [0]
    for c in cost:
        pre.append(pre[-1] + c)
    # best[k][i]: the smallest possible largest total of k spans over blocks [0, i); cut[k][i]: its last cut
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                v = max(best[k - 1][j], pre[i] - pre[j])
                if v < best[k][i]:
                    best[k][i], cut[k][i] = v, j
    spans, i = [], n
    for k in range(stages, 0, -1):
        spans.append((cut[k][i], i))
        i = cut[k][i]
    return spans[::-1]


def ring_route(job: int, model: str, num_blocks: int, spans, ports, params: GenParams,
               kind: str = "causal-lm", endpoints: list[str] | None = None) -> JobRoute:
    """One replica over ``spans``, hop i signed by ``bench_key(i)`` and dialled at 127.0.0.1:ports[i]
    (or ``endpoints[i]``)."""
    eps = endpoints or [f"127.0.0.1:{p}" for p in ports]
    hops = tuple(HopRoute(NodeId(Account.from_key(bench_key(i)).address), ep, a, b)
                 for i, ((a, b), ep) in enumerate(zip(spans, eps)))
    return JobRoute(JobId(job), model, num_blocks, (hops,), params, kind)


@contextmanager
def workers(model_dir: Path, spans, ports, routes: list[JobRoute], workdir: Path, threads: int = 1,
            device: str = "cpu", extra: tuple[str, ...] = (), hosts: list[str] | None = None,
            wrap: list[list[str]] | None = None):
    """Start one ``tessera operator run --plan-file`` per span (skipping hop 0, the caller's); always stop them.
    ``hosts[i]``: the address worker i binds (127.0.0.1); ``wrap[i]``: a command prefix it runs under
    (e.g. ``ip netns exec NAME``)."""
    plan = workdir / "plan.json"
    StaticPlanView(routes).to_file(plan)
    procs = []
    try:
        for i, ((a, b), port) in enumerate(zip(spans, ports)):
            if i == 0:
                continue
            log = open(workdir / f"worker{i}.log", "w")
            cmd = [*(wrap[i] if wrap else []), *WORKER, "--plan-file", str(plan), "--model-dir", str(model_dir),
                   "--start", str(a), "--end", str(b), "--port", str(port), "--private-key", bench_key(i),
                   "--threads", str(threads), "--device", device, "--host", hosts[i] if hosts else "127.0.0.1", *extra]
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True))
        deadline = time.time() + 300
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("READY") or time.time() > deadline:
                raise RuntimeError(f"a worker failed to start; see {workdir}/worker*.log")
        yield procs
    finally:
        stop_processes(procs)
