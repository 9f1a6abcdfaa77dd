"""Decode tokens/s through 1, 2 and 3 stages over loopback gRPC vs monolithic generate.

Every stage is a separate process (the benchmark process is the head and
drives the ring with ``worker.ring.run_replica``; the other stages are
``tessera operator run --plan-file`` processes on 127.0.0.1). The baseline is
transformers' ``generate`` on the unsplit model in one process. Every process
gets ``--threads`` torch threads (1 by default: the ring runs one stage at a
time, so each design uses one core at a time). Tokens/s = new tokens / wall
time of the whole generation (prompt included) for both sides. Each
configuration runs ``--repeats`` times, ring and monolithic alternating so
that load from other programs on a shared machine hits both alike; every run
is kept under ``runs`` and each reported field is its median over the runs.

    python -m bench.pipeline --json [--tokens 64] [--stages 1,2,3] [--codec int8-outlier]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from bench._out import HEADLINE, emit, summarize
from bench._procs import bench_key, even_spans, free_port, ring_route, workers
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams
from worker.ring import Channels, run_replica
from worker.shard import load_full, load_stage
from worker.signing import Signer
from worker.store import load_manifest, resolve

logger = logging.getLogger(__name__)
PROMPT = "The capital of France is Paris. Write a short story about a lighthouse keeper who"


class Monolithic:
    """transformers' generate on the unsplit model, in this process."""

    def __init__(self, model_dir: Path, ids: list[int], tokens: int, device: str):
        self.model = load_full(model_dir, device=device)
        self.model.generation_config.eos_token_id = None  # the ring generates exactly `tokens` too
        self.x, self.tokens = torch.tensor([ids], device=device), tokens
        self.run(4)  # warm-up

    def run(self, tokens: int | None = None) -> tuple[float, list[int]]:
        """(seconds, new token ids) of one generation."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(self.x, max_new_tokens=tokens or self.tokens, do_sample=False, pad_token_id=0)
        return time.perf_counter() - t0, out[0, self.x.shape[1]:].tolist()


def ring(model_dir: Path, ids: list[int], tokens: int, stages: int, cid: int, threads: int,
         device: str, repeats: int, mono: Monolithic) -> list[tuple[float, float, list[int]]]:
    """(ring seconds, monolithic seconds, ring ids) of each run, timed alternately so that
    load from other programs on a shared machine hits both sides alike."""
    n = load_manifest(model_dir).num_blocks
    spans = even_spans(n, stages)
    stage = load_stage(model_dir, *spans[0], device=device)
    ports = [0] + [free_port() for _ in spans[1:]]
    name = stage.spec.model
    warm = ring_route(1, name, n, spans, ports, GenParams(max_tokens=4, codec=cid))
    timed = ring_route(2, name, n, spans, ports, GenParams(max_tokens=tokens, codec=cid))
    signer, channels = Signer(bench_key(0)), Channels()
    runs = []
    with tempfile.TemporaryDirectory() as tmp, workers(model_dir, spans, ports, [warm, timed], Path(tmp),
                                                       threads, device):
        run_replica(stage, warm, 0, ids, signer, channels=channels)
        for _ in range(repeats):
            t_mono = mono.run()[0]
            t0 = time.perf_counter()
            out = run_replica(stage, timed, 0, ids, signer, channels=channels, config=WorkerConfig())
            runs.append((time.perf_counter() - t0, t_mono, out))
    channels.close()
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench pipeline", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored model name or directory")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per generation")
    ap.add_argument("--stages", default="1,2,3", help="comma-separated stage counts")
    ap.add_argument("--codec", default="int8-outlier", help="activation codec name or id")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per configuration; the median counts")
    ap.add_argument("--prompt-ids", help="comma-separated prompt token ids (for models without a tokenizer)")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    model_dir = resolve(args.model)
    if args.prompt_ids:
        ids = [int(v) for v in args.prompt_ids.split(",")]
    else:
        ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT)["input_ids"]
    cid = codec.codec_id(args.codec)
    mono = Monolithic(model_dir, ids, args.tokens, args.device)
    mono_ids = mono.run()[1]
    rows = {}
    for s in [int(v) for v in args.stages.split(",")]:
        runs = ring(model_dir, ids, args.tokens, s, cid, args.threads, args.device, args.repeats, mono)
        rows[str(s)] = r = summarize(
            {"tokens_per_s": [round(args.tokens / t, 2) for t, _, _ in runs],
             "monolithic_tokens_per_s": [round(args.tokens / m, 2) for _, m, _ in runs],
             "vs_monolithic": [round(m / t, 3) for t, m, _ in runs],
             "same_tokens_as_monolithic": [round(sum(a == b for a, b in zip(out, mono_ids)) / len(mono_ids), 3)
                                           for _, _, out in runs]})
        print(f"{s} stage(s): {r['tokens_per_s']:.1f} tok/s ({r['vs_monolithic']:.2f} of monolithic, median of "
              f"{len(runs)}), tokens agree {r['same_tokens_as_monolithic']:.0%}", file=sys.stderr)
    result = {"bench": "pipeline", "model": args.model, "device": args.device, "codec": codec.NAMES[cid],
              "tokens": args.tokens, "prompt_tokens": len(ids), "repeats": args.repeats, "headline": HEADLINE,
              "thread_budget": f"{args.threads} torch thread(s) per process, every process; monolithic: "
                               f"{args.threads} in one process",
              "stages": rows,
              "target": "3 stages >= 0.85 of monolithic"}
    if "3" in rows:
        result["target_met"] = rows["3"]["vs_monolithic"] >= 0.85
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
