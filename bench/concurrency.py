"""Aggregate decode tokens/s of a 3-stage ring with 1, 4, 16, 64 concurrent sessions vs monolithic batched generate.

The ring is the one of ``bench.pipeline``: this process is the head and drives
every session with ``worker.ring.run_replica`` on its own thread, the other
stages are ``tessera operator run --plan-file`` processes on 127.0.0.1; every
stage batches the decode steps of the sessions it holds (``worker.scheduler``).
The baseline is transformers' ``generate`` on the unsplit model with the same
prompts as one left-padded batch, in this process. Thread budget: each ring
process gets ``--threads`` torch threads; the monolithic model gets the ring's
total (stages x threads), capped at the machine's cores. Tokens/s = sessions x
new tokens / wall time of the whole generation (prompts included) on both sides. Each level runs ``--repeats``
times, ring and monolithic alternating so that load from other programs hits
both alike; every run is kept and each field reports the median. On an
accelerator each level first runs ``--warmup`` untimed rounds of both sides (its
first run at a new batch size is cold), kept apart as ``warmup_runs``. With
``--unbatched`` the levels named there also run through a second ring whose
stages run each session's steps on its own thread (``max_batch = 1``): what
batching buys.

    python -m bench.concurrency --json [--sessions 1,4,16,64] [--tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from bench._out import HEADLINE, emit, summarize
from bench._procs import add_split_options, bench_key, free_port, ring_route, ring_spans, warmup_runs, workers
from bench.eval.prompts import english_prompts
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, JobRoute
from worker.ring import Channels, run_replica
from worker.scheduler import scheduler_for
from worker.server import set_gil_switch
from worker.shard import load_full, load_stage
from worker.signing import Signer
from worker.store import load_manifest, resolve

logger = logging.getLogger(__name__)
TARGET = 0.9  # ring / monolithic at TARGET_SESSIONS
TARGET_SESSIONS = 16


class Monolithic:
    """transformers' generate on the unsplit model, all prompts as one left-padded batch."""

    def __init__(self, model_dir: Path, device: str, dtype: torch.dtype):
        self.model = load_full(model_dir, device=device, dtype=dtype)
        self.model.generation_config.eos_token_id = None  # the ring generates exactly `tokens` too
        self.device = device

    def run(self, prompts: list[list[int]], tokens: int, pad: int) -> tuple[float, list[list[int]]]:
        """(seconds, new token ids per prompt) of one batched generation."""
        longest = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        _sync(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=mask, max_new_tokens=tokens, do_sample=False,
                                      pad_token_id=pad)
        _sync(self.device)
        return time.perf_counter() - t0, out[:, longest:].tolist()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Ring:
    """Worker processes for stages 1.. and the head stage here; runs many sessions at once."""

    def __init__(self, stage, routes: dict[int, JobRoute], config: WorkerConfig):
        self.stage, self.routes, self.config = stage, routes, config
        set_gil_switch()  # as in a worker daemon, where heads run
        self.signer, self.channels = Signer(bench_key(0)), Channels()

    def run(self, jobs: list[int], prompts: list[list[int]]) -> tuple[float, list[list[int]]]:
        """(seconds, ids per session) of ``len(jobs)`` sessions started together."""
        out: list[list[int]] = [[] for _ in jobs]
        errors: list[BaseException] = []
        go = threading.Barrier(len(jobs) + 1)

        def session(k: int) -> None:
            go.wait()
            try:
                out[k] = run_replica(self.stage, self.routes[jobs[k]], 0, prompts[k], self.signer,
                                     config=self.config, channels=self.channels)
            except BaseException as exc:  # noqa: BLE001 - reported after the others finish
                errors.append(exc)

        threads = [threading.Thread(target=session, args=(k,), daemon=True) for k in range(len(jobs))]
        for t in threads:
            t.start()
        go.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join(self.config.hop_timeout_s * 10)
        seconds = time.perf_counter() - t0
        if errors or any(t.is_alive() for t in threads):
            raise RuntimeError(f"{len(errors)} of {len(jobs)} sessions failed: {errors[:1]}")
        return seconds, out


def stage_flags(sessions: int, window_ms: float, dtype: str) -> tuple[str, ...]:
    """``tessera operator run`` flags for stages that serve ``sessions`` sessions opened at once (pure)."""
    # one head opens every session at once: the idle-stream caps (per peer 16, overall 64 by default) would end
    # the streams whose OPEN is not read yet, so the stages allow that many, as an operator expecting it would
    return ("--max-sessions", str(2 * sessions), "--batch-window-ms", str(window_ms), "--dtype", dtype,
            "--max-idle-streams-per-peer", str(max(16, 2 * sessions)), "--max-idle-streams", str(max(64, 2 * sessions)))


def monolithic_threads(threads: int, stages: int, cores: int | None = None) -> int:
    """The monolithic model's torch threads: the ring's total, but no more than the machine's cores
    (more would only oversubscribe them, as the ring's processes, one stage at a time, do not) (pure)."""
    return max(1, min(threads * stages, cores or os.cpu_count() or 1))


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of positions where two sets of token sequences agree (pure)."""
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return round(sum(x == y for x, y in pairs) / max(len(pairs), 1), 3)


def plan_jobs(levels: list[int], repeats: int, first: int = 10) -> dict[tuple[str, int, int], list[int]]:
    """Job ids for each (ring kind, level, repeat), distinct across all of them (pure)."""
    out, nxt = {}, first
    for kind in ("batched", "unbatched"):
        for level in levels:
            for r in range(repeats):
                out[(kind, level, r)] = list(range(nxt, nxt + level))
                nxt += level
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench concurrency", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored model name or directory")
    ap.add_argument("--sessions", default="1,4,16,64", help="comma-separated concurrent session counts")
    ap.add_argument("--unbatched", default="16", help="levels also run through unbatched stages ('' for none)")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per session")
    add_split_options(ap)
    ap.add_argument("--codec", default="int8-outlier", help="activation codec name or id")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per ring process; monolithic gets "
                    "stages x threads, at most the machine's cores")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    ap.add_argument("--window-ms", type=float, default=WorkerConfig().batch_window_ms, help="batch window")
    ap.add_argument("--max-batch", type=int, default=WorkerConfig().max_batch,
                    help="sessions in one forward at most, on every stage (fewer: several groups in the ring at once)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per level; the median counts")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed runs of both sides before each level's timed ones, kept in the file apart "
                         "(default: 1 on an accelerator, whose first run at a new batch size is cold; 0 on the CPU)")
    ap.add_argument("--prompt-ids", help="comma-separated prompt token ids, the same for every session (default: "
                    "English prompts, or seeded random ids for a model without a tokenizer)")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)

    load_start = os.getloadavg()
    levels = [int(v) for v in args.sessions.split(",")]
    unbatched = [int(v) for v in args.unbatched.split(",") if v]
    model_dir = resolve(args.model)
    n = load_manifest(model_dir).num_blocks
    cid = codec.codec_id(args.codec)
    dtype = getattr(torch, args.dtype)
    prompts, pad = prompt_ids(model_dir, max(levels), args.prompt_ids)
    mono = Monolithic(model_dir, args.device, dtype)
    spans = ring_spans(model_dir, n, args.stages, args.split)
    ports = [0] + [free_port() for _ in spans[1:]]
    ports_u = [0] + [free_port() for _ in spans[1:]]
    warmup = warmup_runs(args.warmup, args.device)
    jobs = plan_jobs(levels, warmup + args.repeats)
    params = GenParams(max_tokens=args.tokens, codec=cid)
    name = load_manifest(model_dir).name
    routes = {j: ring_route(j, name, n, spans, ports if kind == "batched" else ports_u, params)
              for (kind, _, _), js in jobs.items() for j in js}
    warm = {j: ring_route(j, name, n, spans, ports if j == 1 else ports_u, GenParams(max_tokens=4, codec=cid))
            for j in (1, 2)}
    routes.update(warm)
    head = load_stage(model_dir, *spans[0], device=args.device, dtype=dtype)
    flags = (*stage_flags(max(levels), args.window_ms, args.dtype), "--max-batch", str(args.max_batch))
    mono_threads = monolithic_threads(args.threads, args.stages)
    rows: dict[str, dict] = {}
    # a thread keeps the torch (OpenMP) thread count that was set when it first ran an op: the head's stage
    # thread (worker.scheduler), started by the first ring run, gets the ring's budget, not the default (every
    # core; it ran the head's forwards on 2 threads against the 1 each other stage had)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        (Path(tmp) / "b").mkdir()
        stack.enter_context(workers(model_dir, spans, ports, list(routes.values()), Path(tmp) / "b", args.threads,
                                    args.device, flags))
        batched = Ring(head, routes, WorkerConfig(batch_window_ms=args.window_ms, max_batch=args.max_batch))
        unb = None
        if unbatched:
            (Path(tmp) / "u").mkdir()
            stack.enter_context(workers(model_dir, spans, ports_u, list(routes.values()), Path(tmp) / "u",
                                        args.threads, args.device, (*flags, "--max-batch", "1")))
            unb = Ring(load_stage(model_dir, *spans[0], device=args.device, dtype=dtype), routes,
                       WorkerConfig(max_batch=1))
            unb.run([2], prompts[:1])
        batched.run([1], prompts[:1])  # warm-up: connections, first-call costs
        mono.run(prompts[:2], 4, pad)
        for level in levels:
            runs: dict[str, list] = {"tokens_per_s": [], "monolithic_tokens_per_s": [], "vs_monolithic": [],
                                     "same_tokens_as_monolithic": [], "mean_batch_at_head": []}
            if level in unbatched:
                runs |= {"unbatched_tokens_per_s": [], "batched_vs_unbatched": []}
            cold: dict[str, list] = {"tokens_per_s": [], "monolithic_tokens_per_s": []}
            for r in range(warmup):  # not timed into the median: first calls at this batch size on both sides
                total = level * args.tokens
                torch.set_num_threads(mono_threads)
                t_mono, _ = mono.run(prompts[:level], args.tokens, pad)
                torch.set_num_threads(args.threads)
                t_ring, _ = batched.run(jobs[("batched", level, r)], prompts[:level])
                cold["tokens_per_s"].append(round(total / t_ring, 2))
                cold["monolithic_tokens_per_s"].append(round(total / t_mono, 2))
            for r in range(warmup, warmup + args.repeats):
                torch.set_num_threads(mono_threads)
                t_mono, mono_ids = mono.run(prompts[:level], args.tokens, pad)
                torch.set_num_threads(args.threads)
                sched = scheduler_for(head)
                b0, s0 = sched.batches, sched.batched_steps
                t_ring, ring_ids = batched.run(jobs[("batched", level, r)], prompts[:level])
                total = level * args.tokens
                runs["tokens_per_s"].append(round(total / t_ring, 2))
                runs["monolithic_tokens_per_s"].append(round(total / t_mono, 2))
                runs["vs_monolithic"].append(round(t_mono / t_ring, 3))
                runs["same_tokens_as_monolithic"].append(agreement(ring_ids, mono_ids))
                runs["mean_batch_at_head"].append(round((sched.batched_steps - s0) / max(sched.batches - b0, 1), 2))
                if level in unbatched:
                    t_u, _ = unb.run(jobs[("unbatched", level, r)], prompts[:level])
                    runs["unbatched_tokens_per_s"].append(round(total / t_u, 2))
                    runs["batched_vs_unbatched"].append(round(t_u / t_ring, 3))
            rows[str(level)] = row = summarize(runs)
            if warmup:
                row["warmup_runs"] = cold
            print(f"{level} session(s): ring {row['tokens_per_s']:.1f} tok/s, monolithic batched "
                  f"{row['monolithic_tokens_per_s']:.1f} ({row['vs_monolithic']:.2f}), tokens agree "
                  f"{row['same_tokens_as_monolithic']:.0%}", file=sys.stderr)
        batched.channels.close()
        if unb is not None:
            unb.channels.close()
    result = {"bench": "concurrency", "model": args.model, "device": args.device, "dtype": args.dtype,
              "codec": codec.NAMES[cid], "stages": args.stages, "spans": spans, "tokens": args.tokens,
              "repeats": args.repeats, "warmup": warmup,
              "headline": HEADLINE, "batch_window_ms": args.window_ms, "max_batch": args.max_batch,
              "thread_budget": f"{args.threads} torch thread(s) per ring process ({args.stages} processes); "
                               f"monolithic: {mono_threads} in one process (the ring's total, at most the "
                               f"machine's {os.cpu_count()} cores)",
              "load_before": [round(v, 2) for v in load_start], "sessions": rows,
              "target": f"ring >= {TARGET} of monolithic batched at {TARGET_SESSIONS} sessions"}
    if str(TARGET_SESSIONS) in rows:
        result["target_met"] = rows[str(TARGET_SESSIONS)]["vs_monolithic"] >= TARGET
    return emit(result, args.save, args.json)


def prompt_ids(model_dir: Path, count: int, given: str | None) -> tuple[list[list[int]], int]:
    """``count`` prompts as token ids, and the pad id: ``given`` for every session; else distinct English
    prompts (cycled past the documentation's supply); a model without a tokenizer gets seeded random
    prompts of 12 to 20 ids."""
    if given:
        ids = [int(v) for v in given.split(",")]
        return [ids] * count, 0
    if not (model_dir / "tokenizer.json").is_file():
        g = torch.Generator().manual_seed(0)
        return [torch.randint(3, 1000, (12 + i % 9,), generator=g).tolist() for i in range(count)], 0
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = english_prompts(min(count, 64))
    ids = [tok(t)["input_ids"] for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return [ids[i % len(ids)] for i in range(count)], pad


if __name__ == "__main__":
    sys.exit(main())
