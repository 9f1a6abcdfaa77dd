"""Resident weight memory of each shard per storage scheme.

For a stored model split into 1, 2, 3... even shards (the spans the pipeline
uses), loads each shard with ``worker.shard.load_stage`` under every scheme
and counts its parameter and buffer bytes (``worker.quant.resident_bytes``;
tied embeddings counted once). Schemes: fp32, fp16 and bf16 weights, and
int8-mixed (block Linear weights in int8 with 16-bit outlier features;
embeddings, norms and the LM head stay fp32).

    python -m bench.eval.memory --json [--model smollm2-135m] [--stages 1,3] [--save FILE]
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import torch

from bench._out import emit
from bench._procs import even_spans
from worker.quant import resident_bytes
from worker.shard import load_stage
from worker.store import load_manifest, resolve

SCHEMES = {"fp32": (torch.float32, "fp32"), "fp16": (torch.float16, "fp32"), "bf16": (torch.bfloat16, "fp32"),
           "int8-mixed": (torch.float32, "int8-mixed")}


def shard_bytes(model_dir: Path, start: int, end: int, scheme: str) -> int:
    dtype, weights = SCHEMES[scheme]
    stage = load_stage(model_dir, start, end, dtype=dtype, weights=weights)
    n = resident_bytes(stage)
    del stage
    gc.collect()
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eval.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored model name or directory")
    ap.add_argument("--stages", default="1,3", help="comma-separated shard counts")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--save")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    model_dir = resolve(args.model)
    n = load_manifest(model_dir).num_blocks
    splits = {}
    for s in [int(v) for v in args.stages.split(",") if v]:
        shards = []
        for a, b in even_spans(n, s):
            row = {"start": a, "end": b, "bytes": {}}
            for scheme in [v for v in args.schemes.split(",") if v]:
                row["bytes"][scheme] = shard_bytes(model_dir, a, b, scheme)
            shards.append(row)
            print(f"{s} shards, [{a}, {b}): {row['bytes']}", file=sys.stderr)
        splits[str(s)] = shards
    result = {"bench": "memory", "model": args.model, "blocks": n, "splits": splits,
              "counted": "parameters + buffers resident after load (tied embeddings once)"}
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
