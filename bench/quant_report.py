"""What int8-mixed weights cost and save: memory, top-1 agreement, perplexity, accuracy.

``python -m bench.quant_report MODEL [--tokens N] [--json] [--save FILE]`` prints
one JSON object (last line) for a stored model: a causal LM is scored on real English
text (Python's ``pydoc_data`` topics), a classifier on the digits test split.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pydoc_data.topics import topics

import torch
from transformers import AutoTokenizer

from bench._out import emit
from worker.quant import quantize_stage, resident_bytes
from worker.quant.linear import QuantConfig
from worker.quant.outliers import read_outliers
from worker.shard import load_stage
from worker.store import load_manifest
from worker.vision import digits_test_split


@dataclass(frozen=True)
class QuantReport:
    model: str
    fp32_bytes: int  # resident bytes of the whole-model stage with fp32 weights
    int8_bytes: int  # same with int8-mixed weights
    saved_frac: float  # 1 - int8_bytes / fp32_bytes
    top1_agreement: float  # share of positions (or images) where both pick the same id
    metric: str  # "perplexity" (LM) or "accuracy" (classifier)
    fp32_metric: float
    int8_metric: float
    n: int  # tokens or images scored
    seconds: float


def compare_logits(ref: torch.Tensor, test: torch.Tensor) -> dict:
    """Top-1 agreement and the largest absolute logit difference of two ``(..., V)`` tensors."""
    ref, test = ref.detach().float(), test.detach().float()
    return {"top1_agreement": float((ref.argmax(-1) == test.argmax(-1)).float().mean()),
            "max_abs_diff": float((ref - test).abs().max())}


def perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """exp of the mean next-token cross-entropy; logits ``(1, T, V)``, ids ``(1, T)``."""
    lp = torch.log_softmax(logits[0, :-1].double(), -1)
    return math.exp(float(-lp.gather(-1, ids[0, 1:, None]).mean()))


def english_ids(tokenizer, n_tokens: int) -> torch.Tensor:
    """``(1, n_tokens)`` token ids of real English text shipped with Python."""
    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tokenizer(text[: n_tokens * 8], return_tensors="pt").input_ids[:, :n_tokens]
    return ids


def report(model: str, n_tokens: int = 512, device: str = "cpu", cfg: QuantConfig = QuantConfig(),
           calibrated: bool = True) -> QuantReport:
    """Score ``model`` (stored name or dir) with fp32 and int8-mixed weights.

    ``calibrated``: use the model's stored outlier features (as ``load_stage``
    does) where it has them; otherwise choose them from the weights with ``cfg``.
    """
    t0 = time.time()
    m = load_manifest(model)
    stages = {w: load_stage(m.directory, 0, m.num_blocks, device=device) for w in ("fp32", "int8-mixed")}
    quantize_stage(stages["int8-mixed"], cfg, outliers=read_outliers(m.directory) if calibrated else None)
    if m.kind == "causal-lm":
        ids = english_ids(AutoTokenizer.from_pretrained(m.directory), n_tokens).to(device)
        out = {w: s(ids) for w, s in stages.items()}
        metric, vals = "perplexity", {w: perplexity(o, ids) for w, o in out.items()}
    else:
        x, y = digits_test_split()
        ids = y
        out = {w: s(x) for w, s in stages.items()}
        metric, vals = "accuracy", {w: float((o.argmax(-1).cpu() == y).float().mean()) for w, o in out.items()}
    fp, q = (resident_bytes(stages[w]) for w in ("fp32", "int8-mixed"))
    return QuantReport(m.name, fp, q, 1 - q / fp, compare_logits(out["fp32"], out["int8-mixed"])["top1_agreement"],
                       metric, vals["fp32"], vals["int8-mixed"], int(ids.numel()), time.time() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-frac", type=float, default=QuantConfig().max_frac,
                    help="largest share of input features kept in 16 bits (0: plain int8)")
    ap.add_argument("--weight-outliers", action="store_true",
                    help="ignore the stored calibration; choose outliers from the weights")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = report(args.model, args.tokens, args.device, QuantConfig(max_frac=args.max_frac),
               calibrated=not args.weight_outliers)
    return emit(asdict(r), args.save, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
