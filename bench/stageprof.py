"""Where a stage's forward spends a single-session decode step, against the unsplit model's, in one process.

The ring's hop profile (``bench.hopprofile``) shows each stage's forward as one
number; this benchmark opens it. One session (or ``--batch`` sessions), one process, no gRPC: the unsplit
model (transformers' forward with a ``DynamicCache``, what ``generate`` runs per
token) and each of ``--stages`` even stages (``worker.shard.load_stage``, the
worker's own code path) decode ``--tokens`` steps after a short prompt; each
forward is timed to completion (CUDA synchronised). Reports ms per step of the
unsplit model, of each stage and their sum, and the top functions of a
``cProfile`` of the stages' steps by own time (Python overhead shows there;
on a GPU a launch-bound forward is all Python and launches).

    python -m bench.stageprof --model DIR --device cuda --dtype bfloat16 --json [--save FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time

import torch

from bench._out import HEADLINE, emit
from bench._procs import even_spans
from worker.shard import load_full, load_stage
from worker.store import resolve

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def unsplit_steps(model, prompt: torch.Tensor, tokens: int, device: str) -> list[float]:
    """Seconds of each decode step of the unsplit model (greedy, its own cache; ``prompt`` ``(B, T)``:
    B sessions of the same prompt as one batch)."""
    from transformers import DynamicCache  # lazy: only this benchmark needs it

    cache, times = DynamicCache(), []
    with torch.inference_mode():
        out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        for _ in range(tokens):
            def step():
                nonlocal out
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
            times.append(_timed(step, device))
            nxt = out.logits[:, -1:].argmax(-1)
    return times


def stage_steps(stages, prompt: torch.Tensor, tokens: int, device: str, prof: cProfile.Profile | None,
                batch: int = 1):
    """Seconds of each decode step of each stage (chained in-process), per stage. ``batch`` > 1: that
    many sessions of ``prompt``, each with its own cache, run as the worker's scheduler runs them
    (``stage.forward_batch``)."""
    caches = [[s.new_cache() for _ in range(batch)] for s in stages]
    times = [[] for _ in stages]

    def run(s, x, c, last):
        if batch == 1:
            return s.forward(x, c[0], last=last)
        return torch.cat(s.forward_batch(list(x.split(1)), c, last=last))

    with torch.inference_mode():
        h = prompt.expand(batch, -1)
        for s, c in zip(stages, caches):
            h = run(s, h, c, s is stages[-1])
        nxt = h[:, -1:].argmax(-1)
        for _ in range(tokens):
            h = nxt
            for i, (s, c) in enumerate(zip(stages, caches)):
                x, last = h, s is stages[-1]
                out = {}

                def step(s=s, c=c, x=x, last=last, out=out):
                    out["y"] = run(s, x, c, last)
                if prof is not None:
                    prof.enable()
                times[i].append(_timed(step, device))
                if prof is not None:
                    prof.disable()
                h = out["y"]
            nxt = h[:, -1:].argmax(-1)
    return times


def top_functions(prof: cProfile.Profile, steps: int, n: int = 15) -> list[dict]:
    st = pstats.Stats(prof)
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return [{"function": f"{fn[0].split('site-packages/')[-1]}:{fn[1]}({fn[2]})", "calls_per_step": round(v[1] / steps, 1),
             "own_ms_per_step": round(1e3 * v[2] / steps, 3), "cum_ms_per_step": round(1e3 * v[3] / steps, 3)}
            for fn, v in rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stageprof", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored model name or directory")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--batch", type=int, default=1, help="sessions decoding together (the stages batch them "
                    "as the worker does; the unsplit model runs them as one batch)")
    ap.add_argument("--save")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    md, dt = resolve(a.model), DTYPES[a.dtype]
    prompt = torch.tensor([[1, 791, 6864, 315, 9822, 374, 12366, 13, 9842, 264]], device=a.device)
    full = load_full(md, device=a.device, dtype=dt)
    spans = even_spans(full.config.num_hidden_layers, a.stages)
    batch = prompt.expand(a.batch, -1).contiguous()  # the unsplit model runs the sessions as one batch
    unsplit_steps(full, batch, 4, a.device)  # warm-up
    mono = unsplit_steps(full, batch, a.tokens, a.device)
    del full
    stages = [load_stage(md, s, e, a.device, dt) for s, e in spans]
    stage_steps(stages, prompt, 4, a.device, None, a.batch)  # warm-up
    per = stage_steps(stages, prompt, a.tokens, a.device, None, a.batch)
    prof = cProfile.Profile()
    stage_steps(stages, prompt, a.tokens, a.device, prof, a.batch)
    med = [round(1e3 * statistics.median(t), 3) for t in per]
    result = {
        "bench": "stageprof", "model": a.model, "device": a.device, "dtype": a.dtype, "spans": spans,
        "tokens": a.tokens, "threads": a.threads, "batch": a.batch,
        "headline": HEADLINE,  # of the decode steps, every step kept in runs
        "unsplit_ms_per_step": round(1e3 * statistics.median(mono), 3),
        "stage_ms_per_step": med, "stages_sum_ms_per_step": round(sum(med), 3),
        "stages_sum_vs_unsplit": round(sum(med) / (1e3 * statistics.median(mono)), 3),
        "profile_top_own_time": top_functions(prof, a.tokens),
        "runs": {"unsplit_ms": [round(1e3 * x, 3) for x in mono], "stage_ms": [[round(1e3 * x, 3) for x in t] for t in per]},
    }
    return emit(result, a.save, a.json)


if __name__ == "__main__":
    sys.exit(main())
