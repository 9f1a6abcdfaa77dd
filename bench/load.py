"""Load on the whole system: several requesters submit jobs at a steady rate to a devnet of 8 nodes.

A :class:`tessera.devcluster.DevCluster` (anvil, the contracts, real ``tessera
operator run`` processes on 127.0.0.1) serves SmolLM2 with 6 nodes (two spans,
three copies: 3 two-hop replicas per text job) and the digits CNN with 2 more
(whole model each: 2 one-hop replicas per image job). ``--requesters`` dev
accounts submit ``--jobs`` jobs between them at ``--rate`` jobs/s, a mix of greedy
text, sampled text and image jobs, each through :func:`tessera.requester.run_job`
(the router plans every job with live probes). Measured: jobs per minute (first
submit to last settlement), time from submit to the first token (each job's
token stream, :func:`tessera.tokens.stream_tokens`) and to settlement (the job
finalized on chain), the CPU each node process used and the machine's idle
CPU meanwhile, gas per job (every transaction that names the job). Checked:
every job settled by majority with every replica agreeing, no job and no
replica ran twice (the heads' logs), fees conserved (node earnings plus
requester credits equal the fees escrowed; the contracts hold exactly that
much more ETH) and no stake moved.

    python -m bench.load --json [--jobs 100] [--rate 0.5] [--requesters 3] [--tokens 16]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import load_report
from bench._out import emit
from bench._sysload import CpuSampler
from bench.eval.prompts import english_prompts
from router.source import client_source
from tessera.devcluster import REQUESTER, DevCluster
from tessera.requester import JobSpec, run_job
from tessera.tokens import stream_tokens
from worker.vision.data import digits_test_split, encode_images

logger = logging.getLogger(__name__)
TEXT, IMAGE = "smollm2-135m", "digits-cnn"
KINDS = ("greedy", "sampled", "image")
FEE = 3 * 10**16  # wei per job


@dataclass
class Job:
    kind: str  # greedy | sampled | image
    requester: int  # dev account
    at_s: float  # planned submit time after the start, seconds
    spec: JobSpec
    job_id: int = 0
    t_submit: float = 0.0  # monotonic time run_job was called
    t_submitted: float = 0.0  # ... and returned (planned, escrowed)
    t_first: float | None = None  # first token seen on the job's token stream
    t_settled: float | None = None  # status finalized seen on chain
    error: str = ""
    plan: object = None
    extra: dict = field(default_factory=dict)


def schedule(n: int, rate: float, requesters: list[int], mix: dict[str, float], seed: int = 7) -> list[tuple]:
    """``n`` (kind, requester, at_s) at a steady ``rate`` jobs/s, requesters taking turns, kinds drawn
    from ``mix`` in a seeded order that holds each kind's share exactly (pure)."""
    counts = {k: round(n * w / sum(mix.values())) for k, w in mix.items()}
    counts[max(counts, key=counts.get)] += n - sum(counts.values())
    kinds = [k for k, c in counts.items() for _ in range(c)]
    random.Random(seed).shuffle(kinds)
    return [(kinds[i], requesters[i % len(requesters)], i / rate) for i in range(n)]


def make_spec(kind: str, i: int, prompts: list[str], images, tokens: int) -> JobSpec:
    if kind == "image":
        return JobSpec(IMAGE, encode_images(images[i % len(images)][None]), max_tokens=1, fee_wei=FEE, replicas=2)
    sampled = {"temperature": 0.8, "seed": 1000 + i} if kind == "sampled" else {}
    return JobSpec(TEXT, prompts[i % len(prompts)].encode(), max_tokens=tokens, fee_wei=FEE, replicas=3, **sampled)


def first_token(job: Job, endpoints: dict[str, str], wait_s: float) -> None:
    """Follow the job's token stream until its first token (a classifier's first class id)."""
    try:
        for chunk in stream_tokens(job.plan, job.job_id, endpoints, wait_s=wait_s):
            if chunk.ids:
                job.t_first = time.monotonic()
                return
    except Exception as exc:  # noqa: BLE001 - a lost stream is a missing measurement, not a failed job
        job.extra["stream_error"] = str(exc)[:200]


def submitter(c: DevCluster, jobs: list[Job], t0: float, endpoints: dict[str, str], wait_s: float) -> None:
    """One requester: submit its jobs at their times, each followed by a token-stream watcher."""
    client = c.client(jobs[0].requester)
    source = client_source(client)  # its own probes, refreshed every 30 s
    for job in jobs:
        time.sleep(max(0.0, t0 + job.at_s - time.monotonic()))
        job.t_submit = time.monotonic()
        try:
            res = run_job(client, job.spec, source=source, wait=False)
        except Exception as exc:  # noqa: BLE001 - recorded; the job counts as lost
            job.error = f"{type(exc).__name__}: {exc}"[:300]
            continue
        job.t_submitted = time.monotonic()
        job.job_id, job.plan = int(res.job_id), res.plan
        threading.Thread(target=first_token, args=(job, endpoints, wait_s), daemon=True).start()


def watch(c: DevCluster, jobs: list[Job], stop: threading.Event, poll_s: float = 0.5) -> None:
    """Record when each submitted job is finalized on chain."""
    client = c.client(REQUESTER)
    while not stop.is_set():
        for job in jobs:
            if job.job_id and job.t_settled is None and client.get_job(job.job_id).status == "finalized":
                job.t_settled = time.monotonic()
        stop.wait(poll_s)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tessera bench load", description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--rate", type=float, default=0.5, help="jobs submitted per second, all requesters together")
    ap.add_argument("--requesters", type=int, default=3, help="dev accounts 9, 10, 11 submit in turn")
    ap.add_argument("--tokens", type=int, default=16, help="tokens per text job")
    ap.add_argument("--mix", default="greedy=0.4,sampled=0.3,image=0.3", help="share of each kind of job")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every job to settle")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    return ap


def run(args: argparse.Namespace, workdir: Path) -> dict:
    """Start the devnet in ``workdir``, submit the jobs, wait for them to settle; the result (stopped after)."""
    mix = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}
    requesters = [REQUESTER + i for i in range(args.requesters)]
    plan = schedule(args.jobs, args.rate, requesters, mix)
    images = digits_test_split()[0]
    prompts = english_prompts(64)
    jobs = [Job(k, r, at, make_spec(k, i, prompts, images, args.tokens)) for i, (k, r, at) in enumerate(plan)]
    with DevCluster(workdir, model=TEXT, copies=3, worker={"max_subscribers": 64}) as c:
        c.start(on_step=lambda s: print(f"[load] {s}", file=sys.stderr, flush=True))
        c.add_model(IMAGE)
        for _ in range(2):
            c.add_node((0, c.manifests[IMAGE].num_blocks), model=IMAGE, wait=False)
        for node in c.nodes:
            c.wait_ready(node)
        endpoints = {n.address: f"127.0.0.1:{n.port}" for n in c.nodes}
        before = load_report.snapshot(c, requesters)
        sampler = CpuSampler({n.address: n.proc.pid for n in c.nodes})
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(c, jobs, stop), daemon=True)
        print(f"[load] submitting {args.jobs} jobs at {args.rate}/s from {len(requesters)} requesters",
              file=sys.stderr, flush=True)
        t0 = time.monotonic()
        sampler.start()
        watcher.start()
        subs = [threading.Thread(target=submitter, args=(c, [j for j in jobs if j.requester == r], t0, endpoints,
                                                         args.timeout), daemon=True) for r in requesters]
        for t in subs:
            t.start()
        for t in subs:
            t.join(args.timeout)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and any(j.job_id and j.t_settled is None for j in jobs):
            time.sleep(0.5)
        stop.set()
        cpu = sampler.stop()
        return {**load_report.build(c, jobs, before, cpu, t0, args, requesters), "meanings": load_report.MEANINGS}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
