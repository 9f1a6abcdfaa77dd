"""Honest disagreement: how often honest replicas emit different greedy token ids, and where.

Every replica runs the same prompts (English prefixes from ``pydoc_data``)
for ``--tokens`` greedy steps; each is compared with the reference replica
(fp32, 1 thread, unsplit, on ``--device``) prompt by prompt: does any token
id differ, at which step first, and how close the reference's top two
logits were at that step (:func:`bench.eval.divergence.compare`).

Pairs on CPU: fp32 with 2 threads, bf16, int8-outlier codec at 1 and 3
cuts, and (``--control``) fp32 at 3 cuts with the lossless fp32 codec, which
must agree exactly. With ``--device cuda``: the reference runs on the GPU and
an fp32 CPU replica joins the comparison (same weights, other hardware).

    python -m bench.eval.disagree --json [--prompts 50] [--tokens 32] [--device cpu] [--save FILE]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from bench._out import emit
from bench.eval.decode import Pipeline, Replica
from bench.eval.divergence import Run, compare, margin_threshold_rate
from bench.eval.prompts import english_prompts
from worker.store import load_manifest, resolve

logger = logging.getLogger(__name__)


def replicas(device: str, threads: int, control: bool) -> tuple[Replica, list[Replica]]:
    """(reference, replicas compared with it) for ``device``."""
    ref = Replica("fp32", device=device)
    others = [Replica("bf16", dtype="bf16", device=device),
              Replica("int8-outlier-1cut", cuts=1, codec="int8-outlier", device=device),
              Replica("int8-outlier-3cut", cuts=3, codec="int8-outlier", device=device)]
    if device == "cpu":
        others.insert(0, Replica(f"fp32-{threads}threads", threads=threads))
    else:
        others.insert(0, Replica("fp32-cpu", device="cpu"))
    if control:
        others.append(Replica("fp32-3cut-fp32codec", cuts=3, codec="fp32", device=device))
    return ref, others


def run_all(model_dir: Path, num_blocks: int, rep: Replica, prompts: list[list[int]], tokens: int) -> list[Run]:
    pipe = Pipeline(model_dir, num_blocks, rep)
    t0 = time.perf_counter()
    runs = [pipe.greedy(p, tokens) for p in prompts]
    logger.info("%s: %d prompts in %.0f s", rep.name, len(prompts), time.perf_counter() - t0)
    print(f"{rep.name}: {len(prompts)} prompts x {tokens} tokens in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    del pipe
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eval.disagree", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored causal LM name or directory")
    ap.add_argument("--prompts", type=int, default=50, help="number of English prompts")
    ap.add_argument("--words", type=int, default=12, help="words per prompt")
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the reference runs here)")
    ap.add_argument("--threads", type=int, default=2, help="thread count of the CPU replica compared with 1 thread")
    ap.add_argument("--control", action="store_true", help="also run fp32 at 3 cuts with the fp32 codec (must agree)")
    ap.add_argument("--only", help="comma-separated replica names to run (default all)")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)

    model_dir = resolve(args.model)
    n = load_manifest(model_dir).num_blocks
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = english_prompts(args.prompts, args.words)
    prompts = [tok(t)["input_ids"] for t in texts]
    ref, others = replicas(args.device, args.threads, args.control)
    if args.only:
        keep = set(args.only.split(","))
        others = [r for r in others if r.name in keep]
    ref_runs = run_all(model_dir, n, ref, prompts, args.tokens)
    pairs = {}
    for rep in others:
        cmp = compare(ref_runs, run_all(model_dir, n, rep, prompts, args.tokens))
        pairs[rep.name] = {"replica": rep.__dict__, **cmp}
        print(f"fp32 vs {rep.name}: {cmp['differ']}/{cmp['prompts']} prompts differ; "
              f"margins there {cmp['ref_margin_at_divergence']}", file=sys.stderr)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {"bench": "disagree", "model": args.model, "device": args.device, "device_name": device_name,
              "prompts": args.prompts, "tokens": args.tokens, "reference": ref.__dict__,
              "prompt_examples": texts[:3],
              "ref_prompts_with_margin_below": {str(t): round(margin_threshold_rate(ref_runs, t), 4)
                                                for t in (0.05, 0.1, 0.25, 0.5)},
              "pairs": pairs}
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
