"""Where each millisecond of a decode step goes at each stage of a 3-stage ring, at 1 and 16 sessions.

The ring is the one of ``bench.concurrency``: this process is the head and runs
every session on its own thread, the other stages are ``tessera operator run
--plan-file`` processes on 127.0.0.1 that batch concurrent sessions' steps.
Every node counts the phases of each decode step (:mod:`worker.steptimes`:
codec decode, queueing for the stage, the forward, the thread handoff, the
wait for the incoming signature check, receipt, codec encode, message build,
signing, the wait for the next hop, the answer's check, sampling, and the rest
as Python glue) and logs them when a session ends; this benchmark reads those
lines (the head's from its own log, the other stages' from their log files),
averages them over the sessions of a run weighted by steps, and reports the
median of ``--repeats`` runs. Step 0 (the prompt) is left out: ms per decode
step, per session.

``transport`` between stage i and i+1 is stage i's wait for the next hop minus
stage i+1's whole time in the step: gRPC and HTTP/2 over loopback, protobuf
(de)serialisation and handler threads waking up (with many sessions, waiting
for the GIL too). Protobuf alone is timed apart on a real step message and its
answer. CPU ms per token of each process come from /proc.

    python -m bench.hopprofile --json [--sessions 1,16] [--tokens 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._out import HEADLINE, emit
from bench._procs import add_split_options, bench_key, free_port, ring_route, ring_spans, warmup_runs, workers
from bench._sysload import CpuSampler
from bench.concurrency import Ring, plan_jobs, prompt_ids, stage_flags
from proto.tessera.v1 import worker_pb2 as pb
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams
from worker.ring.link import encode_activation, message
from worker.shard import load_stage
from worker.signing import Signer
from worker.steptimes import PHASES, parse
from worker.store import load_manifest, resolve
from worker.wire import domain_separator

logger = logging.getLogger(__name__)
# the head's line (worker.ring.head) and a hop's at CLOSE (worker.ring.hop): job, hop (none: the head), summary
LINE = re.compile(r"job (\d+) replica \d+(?: at hop (\d+))?.*ms per decode step: (.*)$")
FIELDS = ("total", "batch", *PHASES, "verify_cpu")


class _Lines(logging.Handler):
    """Keeps the messages of the records it sees."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def summaries(lines: list[str], jobs: set[int]) -> dict[int, list[dict[str, float]]]:
    """Stage (hop position) -> the step summaries of ``jobs`` found in ``lines`` (pure)."""
    out: dict[int, list[dict[str, float]]] = {}
    for line in lines:
        m = LINE.search(line)
        if m and int(m.group(1)) in jobs:
            out.setdefault(int(m.group(2) or 0), []).append(parse(m.group(3)))
    return out


def mean_by_steps(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each field's mean over sessions, weighted by their decode steps (pure)."""
    steps = sum(r.get("steps", 0) for r in rows) or 1
    return {k: round(sum(r.get(k, 0.0) * r.get("steps", 0) for r in rows) / steps, 3) for k in FIELDS}


def profile_of(stages: list[dict[str, float]], sessions: int) -> dict:
    """Per stage its phases, per link its transport (stage i's wait for the next hop minus stage i+1's
    time in the step), ms per decode step; and per stage the share of a round (the head's step) its
    thread spends in forwards: ``sessions / batch`` of them per round (pure)."""
    links = [round(a["next_hop"] - b["total"], 3) for a, b in zip(stages, stages[1:])]
    busy = [round(s["forward"] * sessions / max(s["batch"], 1) / max(stages[0]["total"], 1e-9), 3) for s in stages]
    return {"stages": stages, "transport_ms": links, "busy_share": busy}


def protobuf_us(y: torch.Tensor, cid: int, signer: Signer, repeats: int = 200) -> dict[str, float]:
    """Median microseconds to serialise and to parse a decode step's message carrying ``y`` and its answer."""
    domain = domain_separator(1, "0x" + "00" * 20)
    payload, extras = encode_activation(y, cid, 64)
    req = signer.sign(message(1, 0, 0, 1, pb.KIND_STEP, payload=payload, extras=extras, session=b"\1" * 32), domain)
    ans = signer.sign(message(1, 0, 1, 1, pb.KIND_STEP, upstream=True, ids=[1234], session=b"\1" * 32), domain)
    out = {}
    for name, msg in (("step", req), ("answer", ans)):
        raw = msg.SerializeToString()
        for what, fn in (("serialise", msg.SerializeToString), ("parse", lambda raw=raw: pb.HopMessage.FromString(raw))):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[f"{name}_{what}_us"] = round(1e6 * statistics.median(times), 2)
        out[f"{name}_bytes"] = len(raw)
    out["per_hop_per_step_us"] = round(sum(v for k, v in out.items() if k.endswith("_us")), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench hopprofile", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored model name or directory")
    ap.add_argument("--sessions", default="1,16", help="comma-separated concurrent session counts")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per session")
    add_split_options(ap)
    ap.add_argument("--codec", default="int8-outlier", help="activation codec name or id")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per ring process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    ap.add_argument("--window-ms", type=float, default=WorkerConfig().batch_window_ms, help="batch window")
    ap.add_argument("--max-batch", type=int, default=WorkerConfig().max_batch,
                    help="sessions in one forward at most, on every stage (fewer: several groups in the ring at once)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per level; the median counts")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed runs of each level before the timed ones (default: 1 on an accelerator, whose first "
                         "run at a new batch size is cold; 0 on the CPU)")
    ap.add_argument("--prompt-ids", help="comma-separated prompt token ids, the same for every session")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)

    load_start = os.getloadavg()
    levels = [int(v) for v in args.sessions.split(",")]
    model_dir = resolve(args.model)
    n, name = load_manifest(model_dir).num_blocks, load_manifest(model_dir).name
    cid, dtype = codec.codec_id(args.codec), getattr(torch, args.dtype)
    prompts, _ = prompt_ids(model_dir, max(levels), args.prompt_ids)
    spans = ring_spans(model_dir, n, args.stages, args.split)
    ports = [0] + [free_port() for _ in spans[1:]]
    warmup = warmup_runs(args.warmup, args.device)
    jobs = plan_jobs(levels, warmup + args.repeats)
    params = GenParams(max_tokens=args.tokens, codec=cid)
    routes = {j: ring_route(j, name, n, spans, ports, params) for (k, _, _), js in jobs.items() if k == "batched"
              for j in js}
    routes[1] = ring_route(1, name, n, spans, ports, GenParams(max_tokens=4, codec=cid))
    torch.set_num_threads(args.threads)
    head = load_stage(model_dir, *spans[0], device=args.device, dtype=dtype)
    head_log = _Lines()
    head_logger = logging.getLogger("worker.ring.head")
    head_logger.addHandler(head_log)
    head_logger.setLevel(logging.INFO)
    runs: dict[int, list[dict]] = {lv: [] for lv in levels}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        procs = stack.enter_context(workers(model_dir, spans, ports, list(routes.values()), Path(tmp), args.threads,
                                            args.device, (*stage_flags(max(levels), args.window_ms, args.dtype),
                                                          "--max-batch", str(args.max_batch))))
        ring = Ring(head, routes, WorkerConfig(batch_window_ms=args.window_ms, max_batch=args.max_batch))
        ring.run([1], prompts[:1])  # warm-up: connections, first-call costs
        pids = {"stage0": os.getpid(), **{f"stage{i + 1}": p.pid for i, p in enumerate(procs)}}
        for level in levels:  # untimed, not profiled: the first run at a batch size is cold on an accelerator
            for r in range(warmup):
                ring.run(jobs[("batched", level, r)], prompts[:level])
        for r in range(args.repeats):
            for level in levels:
                ids = jobs[("batched", level, warmup + r)]
                cpu = CpuSampler(pids, every_s=1.0).start()
                seconds, _ = ring.run(ids, prompts[:level])
                used = cpu.stop()["processes"]
                lines = list(head_log.lines)
                for i in range(1, args.stages):
                    lines += (Path(tmp) / f"worker{i}.log").read_text().splitlines()
                found = summaries(lines, set(ids))
                if sorted(found) != list(range(args.stages)) or any(len(v) != level for v in found.values()):
                    raise RuntimeError(f"step summaries missing for {level} sessions: "
                                       f"{ {k: len(v) for k, v in found.items()} }")
                tokens = level * args.tokens
                runs[level].append({
                    "tokens_per_s": round(tokens / seconds, 2), "wall_ms_per_round": round(1e3 * seconds / args.tokens, 2),
                    "cpu_ms_per_token": {k: round(1e3 * v["cpu_s"] / tokens, 2) for k, v in used.items()},
                    **profile_of([mean_by_steps(found[i]) for i in range(args.stages)], level)})
                print(f"{level} session(s), run {r + 1}: {tokens / seconds:.1f} tok/s", file=sys.stderr)
        ring.channels.close()
    with torch.inference_mode():
        y = head.forward(torch.tensor([prompts[0]]), head.new_cache())[:, -1:]
    result = {"bench": "hopprofile", "model": args.model, "device": args.device, "dtype": args.dtype,
              "codec": codec.NAMES[cid], "stages": args.stages, "spans": spans, "tokens": args.tokens,
              "repeats": args.repeats, "warmup": warmup, "headline": HEADLINE, "batch_window_ms": args.window_ms,
              "max_batch": args.max_batch,
              "threads": args.threads, "load_before": [round(v, 2) for v in load_start],
              "load_after": [round(v, 2) for v in os.getloadavg()],
              "levels": {str(lv): median_run(rs) for lv, rs in runs.items()},
              "protobuf": protobuf_us(y.float(), cid, Signer(bench_key(0))),
              "note": "ms per decode step per session (step 0, the prompt, left out); transport = a stage's wait "
                      "for the next hop minus the next stage's time in the step; verify_cpu overlaps the forward "
                      "(on the verifier thread) and is not part of total"}
    return emit(result, args.save, args.json)


def median_run(rs: list[dict]) -> dict:
    """Every number of the runs replaced by its median over them, the runs kept under ``runs`` (pure)."""
    def med(vals):
        if isinstance(vals[0], dict):
            return {k: med([v[k] for v in vals]) for k in vals[0]}
        if isinstance(vals[0], list):
            return [med([v[i] for v in vals]) for i in range(len(vals[0]))]
        return round(statistics.median(vals), 3)
    return {**med(rs), "runs": rs}


if __name__ == "__main__":
    sys.exit(main())
