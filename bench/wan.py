"""Hosts across a network: a 3-stage ring whose stages sit in separate network namespaces.

Each stage runs in its own Linux network namespace (:class:`bench.netns.Hosts`),
joined to this one by a veth pair capped at ``--rate-mbit`` (``tc tbf``). Hosts
reach each other only through delay relays here (:mod:`bench.relay`: this
kernel has no ``netem``) that hold every byte for half the round trip, with
uniform jitter of ``--jitter`` of that. The head stage is a driver process in
host 0 (``python -m bench.wan --as-head``); hops 1 and 2 are ``tessera operator
run --plan-file`` processes in hosts 1 and 2. For each RTT it measures one
session's tokens/s and the aggregate tokens/s of ``--sessions`` sessions at
once (median of ``--repeats``, every run kept). The physical limit of one
session at a given RTT is its time at RTT 0 (compute, codec, signatures, local
transport) plus, per token, the one-way delays a token crosses: down the ring
and back up it, 2 x (stages - 1) of them. The relay's own cost is measured
first on loopback: the same ring with and without 0 ms relays in front of each
hop. Everything the benchmark makes (namespaces, veth pairs, qdiscs, relays,
workers) is removed at the end, also on failure.

    python -m bench.wan --json [--rtt-ms 0,10,50,100] [--sessions 16] [--tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench._out import HEADLINE, emit, summarize
from bench._procs import REPO, even_spans, free_port, ring_route, workers
from bench.concurrency import Ring, prompt_ids
from bench.netns import Hosts, leftovers
from tessera.procs import stop_processes
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, StaticPlanView
from worker.shard import load_stage
from worker.store import load_manifest, resolve

logger = logging.getLogger(__name__)
STAGES = 3
PETALS_LOSS_AT_100MS = 0.28  # Petals' published share of throughput lost at 100 ms RTT (Borzunov et al., 2023)
TARGET_SINGLE, TARGET_AGGREGATE = 0.9, 0.7


@contextlib.contextmanager
def relay(routes: list[str], delay_ms: float, jitter_ms: float, wrap: list[str] | None = None):
    """A :mod:`bench.relay` process for ``routes`` (LISTEN=TARGET); always stopped."""
    cmd = [*(wrap or []), sys.executable, "-m", "bench.relay", "--delay-ms", str(delay_ms), "--jitter-ms",
           str(jitter_ms), *[a for r in routes for a in ("--route", r)]]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if not p.stdout.readline().startswith("READY"):
            raise RuntimeError(f"the relay did not start: {' '.join(cmd)}")
        yield p
    finally:
        stop_processes([p])


def job_ids(config: int, repeats: int, sessions: int) -> dict[str, list[int]]:
    """Job ids of one RTT configuration: a warm-up, the single-session runs, the concurrent ones (pure)."""
    base = 100_000 * (config + 1)
    return {"warm": [base], "single": [base + 1 + r for r in range(repeats)],
            "multi": [base + 1000 + r * sessions + k for r in range(repeats) for k in range(sessions)]}


def limit_tokens_per_s(tokens: int, seconds_at_zero: float, rtt_ms: float, stages: int = STAGES) -> float:
    """One session's best tokens/s at ``rtt_ms``: its time at RTT 0 plus, for every token, the one-way
    delays it crosses down the ring and back, 2 x (stages - 1) (pure)."""
    return tokens / (seconds_at_zero + tokens * (stages - 1) * rtt_ms / 1e3)


def head_main(args: argparse.Namespace) -> int:
    """The head driver inside host 0: run the configuration's sessions, print their timings as JSON."""
    model_dir = resolve(args.model)
    view = StaticPlanView.from_file(args.plan)
    ids = json.loads(args.jobs)
    first = view.route(ids["warm"][0])
    stage = load_stage(model_dir, first.replicas[0][0].start, first.replicas[0][0].end)
    torch.set_num_threads(args.threads)
    routes = {j: view.route(j) for js in ids.values() for j in js}
    ring = Ring(stage, routes, WorkerConfig(hop_timeout_s=120))
    prompts, _ = prompt_ids(model_dir, args.sessions, None)
    ring.run(ids["warm"], prompts[:1])
    out = {"single_s": [], "multi_s": [], "single_ids": []}
    for r in range(args.repeats):
        t, got = ring.run([ids["single"][r]], prompts[:1])
        out["single_s"].append(round(t, 4))
        out["single_ids"].append(got[0])
        t, _ = ring.run(ids["multi"][r * args.sessions:(r + 1) * args.sessions], prompts[:args.sessions])
        out["multi_s"].append(round(t, 4))
    ring.channels.close()
    print(json.dumps(out), flush=True)
    return 0


def loopback_overhead(model_dir: Path, spans, name: str, n: int, params: GenParams, args, tmp: Path) -> dict:
    """One session through the ring on loopback, direct vs with a 0 ms relay in front of each hop."""
    ports, relays = [0] + [free_port() for _ in spans[1:]], [free_port() for _ in spans[1:]]
    direct = ring_route(1, name, n, spans, ports, params)
    relayed = ring_route(2, name, n, spans, ports, params,
                         endpoints=["-", *[f"127.0.0.1:{p}" for p in relays]])
    stage = load_stage(model_dir, *spans[0])
    prompts, _ = prompt_ids(model_dir, 1, None)
    routes = [direct, relayed]
    with workers(model_dir, spans, ports, routes, tmp, args.threads), \
            relay([f"127.0.0.1:{r}=127.0.0.1:{p}" for r, p in zip(relays, ports[1:])], 0, 0):
        ring = Ring(stage, {1: direct, 2: relayed}, WorkerConfig())
        ring.run([1], prompts)
        ring.run([2], prompts)
        runs = {"direct_tokens_per_s": [], "relayed_tokens_per_s": [], "relayed_vs_direct": []}
        for _ in range(args.repeats):
            td, _ = ring.run([1], prompts)
            tr, _ = ring.run([2], prompts)
            runs["direct_tokens_per_s"].append(round(args.tokens / td, 2))
            runs["relayed_tokens_per_s"].append(round(args.tokens / tr, 2))
            runs["relayed_vs_direct"].append(round(td / tr, 3))
        ring.channels.close()
    return summarize(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench wan", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored model name or directory")
    ap.add_argument("--rtt-ms", default="0,10,50,100", help="round-trip times to run; 0 gives the compute baseline")
    ap.add_argument("--jitter", type=float, default=0.1, help="jitter as a share of the one-way delay")
    ap.add_argument("--rate-mbit", type=float, default=100.0, help="bandwidth cap of every host link, Mbit/s")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per session")
    ap.add_argument("--sessions", type=int, default=16, help="concurrent sessions of the aggregate runs")
    ap.add_argument("--codec", default="int8-outlier")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per stage process")
    ap.add_argument("--repeats", type=int, default=3, help="runs per RTT; the median counts")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--as-head", action="store_true", help=argparse.SUPPRESS)  # the driver inside host 0
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.as_head:
        return head_main(args)

    load_before = os.getloadavg()
    rtts = [float(v) for v in args.rtt_ms.split(",")]
    if 0.0 not in rtts:
        rtts.insert(0, 0.0)  # the baseline every limit is computed from
    model_dir = resolve(args.model)
    n = load_manifest(model_dir).num_blocks
    name = load_manifest(model_dir).name
    spans = even_spans(n, STAGES)
    params = GenParams(max_tokens=args.tokens, codec=codec.codec_id(args.codec))
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lo").mkdir()
        overhead = loopback_overhead(model_dir, spans, name, n, params, args, Path(tmp) / "lo")
        print(f"relay at 0 ms on loopback: {overhead['relayed_vs_direct']:.3f} of direct", file=sys.stderr)
        with Hosts(STAGES, args.rate_mbit) as hosts:
            ports = [0] + [free_port() for _ in spans[1:]]
            relays = [0] + [free_port() for _ in spans[1:]]
            # hop k is dialled by hop k-1 at its own gateway here, where the relay forwards to host k
            eps = ["-", *[f"{hosts.gateway(k - 1)}:{relays[k]}" for k in range(1, STAGES)]]
            # one configuration per (repeat, RTT): each repeat runs every RTT in turn, so that a ratio between
            # RTTs compares runs minutes apart at most, not whole blocks of runs (the machine's load drifts)
            ids = {(r, rtt): job_ids(r * len(rtts) + i, 1, args.sessions)
                   for r in range(args.repeats) for i, rtt in enumerate(rtts)}
            routes = [ring_route(j, name, n, spans, ports, params, endpoints=eps)
                      for js in ids.values() for jobs in js.values() for j in jobs]
            plan = Path(tmp) / "ns" / "plan.json"
            plan.parent.mkdir()
            with workers(model_dir, spans, ports, routes, plan.parent, args.threads,
                         hosts=[hosts.address(k) for k in range(STAGES)],
                         wrap=[hosts.exec(k) for k in range(STAGES)]):
                for (r, rtt), jobs in ids.items():
                    one_way = rtt / 2
                    forward = [f"{hosts.gateway(k - 1)}:{relays[k]}={hosts.address(k)}:{ports[k]}"
                               for k in range(1, STAGES)]
                    with relay(forward, one_way, args.jitter * one_way):
                        head = [*hosts.exec(0), sys.executable, "-m", "bench.wan", "--as-head", "--plan", str(plan),
                                "--jobs", json.dumps(jobs), "--model", str(model_dir), "--tokens",
                                str(args.tokens), "--sessions", str(args.sessions), "--repeats", "1",
                                "--threads", str(args.threads)]
                        out = subprocess.run(head, cwd=REPO, capture_output=True, text=True, timeout=3600)
                    if out.returncode != 0:
                        raise RuntimeError(f"the head driver failed at RTT {rtt:g} ms: {out.stderr[-2000:]}")
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    row = rows.setdefault(f"{rtt:g}", {"single_s": [], "multi_s": [], "single_ids": []})
                    for k in row:
                        row[k] += got[k]
                    print(f"run {r + 1}, RTT {rtt:g} ms: one session {args.tokens / got['single_s'][0]:.2f} tok/s, "
                          f"{args.sessions} sessions {args.sessions * args.tokens / got['multi_s'][0]:.1f} tok/s",
                          file=sys.stderr, flush=True)
    result = summarize_rows(rows, args)
    result.update({"relay_overhead_loopback": overhead, "load_before": [round(v, 2) for v in load_before],
                   "namespaces_left": leftovers()})
    return emit(result, args.save, args.json)


def summarize_rows(rows: dict[str, dict], args) -> dict:
    """Per RTT: medians over the runs; per run (run i of every RTT made in one pass), one session against
    its physical limit from run i at RTT 0 and the aggregate against run i at the smallest positive RTT,
    each ratio's median over the runs (pure)."""
    base = rows["0"]["single_s"] if "0" in rows else None
    positive = sorted((float(k) for k in rows if float(k) > 0))
    ref = rows[f"{positive[0]:g}"]["multi_s"] if positive else None
    out = {}
    for key, got in rows.items():
        rtt = float(key)
        runs = {"tokens_per_s": [round(args.tokens / t, 3) for t in got["single_s"]],
                "aggregate_tokens_per_s": [round(args.sessions * args.tokens / t, 2) for t in got["multi_s"]]}
        if base is not None:
            runs["limit_tokens_per_s"] = [round(limit_tokens_per_s(args.tokens, b, rtt), 3) for b in base]
            runs["vs_limit"] = [round(v / lim, 3) for v, lim in zip(runs["tokens_per_s"], runs["limit_tokens_per_s"])]
        if ref is not None:
            runs["aggregate_vs_smallest_rtt"] = [round(r / t, 3) for t, r in zip(got["multi_s"], ref)]
        row = summarize(runs)
        row["same_tokens_every_run"] = all(ids == got["single_ids"][0] for ids in got["single_ids"])
        out[key] = row
    top = out.get(f"{max(float(k) for k in rows):g}", {})
    return {"bench": "wan", "model": args.model, "stages": STAGES, "codec": args.codec, "tokens": args.tokens,
            "sessions": args.sessions, "repeats": args.repeats, "rate_mbit": args.rate_mbit,
            "jitter_share": args.jitter, "headline": HEADLINE, "rtt_ms": out,
            "petals_loss_at_100ms": PETALS_LOSS_AT_100MS,
            "targets": {"single_vs_limit": TARGET_SINGLE, "aggregate_100_vs_10": TARGET_AGGREGATE},
            "targets_met": {"single": all(r.get("vs_limit", 0) >= TARGET_SINGLE for k, r in out.items() if float(k) > 0),
                            "aggregate": top.get("aggregate_vs_smallest_rtt", 0) >= TARGET_AGGREGATE},
            "note": "each run visits every RTT in turn; limit = tokens / (seconds at RTT 0 + tokens x 2 x (stages - 1) "
                    "x one-way delay) from the same run; aggregate compared with the same run at the smallest RTT "
                    "> 0; ratios are medians of the per-run ratios"}


if __name__ == "__main__":
    sys.exit(main())
