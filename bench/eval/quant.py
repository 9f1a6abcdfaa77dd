"""int8-mixed weights against fp32 on every stored model: memory, top-1 agreement, perplexity or accuracy.

A thin loop over :func:`bench.quant_report.report` (the whole model as one
stage; weight quantization does not depend on where the model is cut).

    python -m bench.eval.quant --json [--models smollm2-135m,digits-cnn,digits-vit] [--tokens 1024]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

import torch

from bench._out import emit
from bench.quant_report import report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eval.quant", description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,digits-cnn,digits-vit")
    ap.add_argument("--tokens", type=int, default=1024, help="English tokens scored for language models")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    rows = {}
    for m in [v for v in args.models.split(",") if v]:
        rows[m] = asdict(report(m, args.tokens))
        print(f"{m}: {rows[m]}", file=sys.stderr)
    result = {"bench": "quant", "weights": "int8-mixed", "models": rows}
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
