"""Wire bytes, perplexity and top-1 agreement of every activation codec.

The model is cut into one-block stages (``worker.shard.load_stage``); a run
with ``k`` cuts sends the hidden states through ``codec.encode`` /
``codec.decode`` at ``k`` evenly spaced block boundaries and passes them
untouched elsewhere (stages chained without a codec reproduce the unsplit
model exactly, a test of worker.shard). Text: Python's ``pydoc_data.topics``
(real English), tokenised and cut into windows. Vision: the digits test split
through the CNN and the ViT, cut at every stage boundary.

    python -m bench.codec --json [--tokens 2048] [--cuts 1,3,29] [--codecs ...] [--no-vision]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

import torch
from transformers import AutoTokenizer

from bench._out import emit
from bench._procs import even_spans
from worker import codec
from worker.shard import load_stage
from worker.store import load_manifest, resolve
from worker.vision import digits_test_split

logger = logging.getLogger(__name__)


def english_tokens(tokenizer, n: int) -> torch.Tensor:
    """The first ``n`` tokens of pydoc_data's topics (sorted by topic name)."""
    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tokenizer(text[: 12 * n])["input_ids"]
    if len(ids) < n:
        raise SystemExit(f"only {len(ids)} tokens of text available, asked for {n}")
    return torch.tensor(ids[:n])


def cut_points(num_blocks: int, cuts: int) -> set[int]:
    """Block boundaries where ``cuts`` cuts fall (evenly spaced)."""
    return {a for a, _ in even_spans(num_blocks, cuts + 1)[1:]}


class Chain:
    """One-block stages; ``run`` applies a codec at the given boundaries and counts bytes."""

    def __init__(self, model_dir: Path, num_blocks: int):
        self.stages = [load_stage(model_dir, i, i + 1) for i in range(num_blocks)]
        self.wire = self.raw = 0

    def run(self, x: torch.Tensor, cuts: set[int], cid: int, block: int) -> torch.Tensor:
        with torch.inference_mode():
            for i, stage in enumerate(self.stages):
                if i in cuts:
                    enc = codec.encode(x, cid, block)
                    self.wire += enc.nbytes
                    self.raw += 4 * x.numel()
                    x = codec.decode(enc).to(x.dtype)
                x = stage.forward(x, stage.new_cache())
        return x


def text_metrics(chain: Chain, windows: torch.Tensor, cuts: set[int], cid: int, block: int,
                 ref_top1: list[torch.Tensor] | None) -> dict:
    nll, count, agree, top1 = 0.0, 0, 0, []
    chain.wire = chain.raw = 0
    for w, ids in enumerate(windows):
        logits = chain.run(ids[None], cuts, cid, block)[0].float()  # (T, V)
        logp = torch.log_softmax(logits[:-1].double(), -1)
        nll -= logp.gather(1, ids[1:, None]).sum().item()
        count += ids.numel() - 1
        top1.append(logits.argmax(-1))
        if ref_top1 is not None:
            agree += (top1[-1] == ref_top1[w]).sum().item()
    out = {"perplexity": math.exp(nll / count), "top1": top1}
    if ref_top1 is not None:
        out["top1_agreement"] = agree / sum(t.numel() for t in ref_top1)
    if chain.raw:
        out["bytes_vs_fp32"] = chain.wire / chain.raw
        out["bytes_per_token_per_hop"] = chain.wire / (windows.numel() * len(cuts))
    return out


def language(args, codecs: list[int]) -> dict:
    model_dir = resolve(args.model)
    n = load_manifest(model_dir).num_blocks
    ids = english_tokens(AutoTokenizer.from_pretrained(model_dir), args.tokens)
    windows = ids[: args.tokens // args.window * args.window].view(-1, args.window)
    chain = Chain(model_dir, n)
    ref = text_metrics(chain, windows, set(), codec.FP32, args.block, None)
    res = {"model": args.model, "tokens": windows.numel(), "window": args.window, "block": args.block,
           "fp32_perplexity": round(ref["perplexity"], 4), "cuts": {}}
    for k in args.cuts:
        rows = {}
        for cid in codecs:
            t0 = time.perf_counter()
            m = text_metrics(chain, windows, cut_points(n, k), cid, args.block, ref["top1"])
            rows[codec.NAMES[cid]] = {
                "bytes_vs_fp32": round(m["bytes_vs_fp32"], 4),
                "bytes_per_token_per_hop": round(m["bytes_per_token_per_hop"], 1),
                "perplexity": round(m["perplexity"], 4),
                "perplexity_vs_fp32_pct": round(100 * (m["perplexity"] / ref["perplexity"] - 1), 3),
                "top1_agreement": round(m["top1_agreement"], 4)}
            print(f"{k:>2} cuts {codec.NAMES[cid]:>13}: {rows[codec.NAMES[cid]]} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        res["cuts"][str(k)] = rows
    return res


def vision(name: str, codecs: list[int], block: int) -> dict:
    model_dir = resolve(name)
    n = load_manifest(model_dir).num_blocks
    x, y = digits_test_split()
    chain = Chain(model_dir, n)
    out = {"blocks": n, "test_images": len(y), "cuts": n - 1, "accuracy": {}, "bytes_vs_fp32": {}}
    for cid in [codec.FP32, *codecs]:
        chain.wire = chain.raw = 0
        pred = chain.run(x, set(range(1, n)), cid, block).argmax(-1)
        out["accuracy"][codec.NAMES[cid]] = round((pred == y).float().mean().item(), 4)
        out["bytes_vs_fp32"][codec.NAMES[cid]] = round(chain.wire / max(chain.raw, 1), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench codec", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored language model name or directory")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens of English text to score")
    ap.add_argument("--window", type=int, default=512, help="tokens per forward pass")
    ap.add_argument("--cuts", default="1,3,29", help="comma-separated numbers of cuts")
    ap.add_argument("--codecs", default="fp16,bf16,int8-absmax,int8-outlier,int8-dynamic",
                    help="codecs to compare with fp32 (fp32 itself is lossless by construction)")
    ap.add_argument("--block", type=int, default=64, help="codec block size, values")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--vision", default="digits-cnn,digits-vit", help="vision models ('' to skip)")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    args.cuts = [int(c) for c in args.cuts.split(",") if c]
    args.window = min(args.window, args.tokens)
    torch.set_num_threads(args.threads)
    codecs = [codec.codec_id(c) for c in args.codecs.split(",") if c]
    result = {"bench": "codec", "language": language(args, codecs) if args.cuts else None, "vision": {},
              "target": "3 cuts, int8-outlier: bytes <= 0.30 of fp32, perplexity within 0.5%, top-1 >= 99%"}
    for name in [v for v in args.vision.split(",") if v]:
        result["vision"][name] = vision(name, codecs, args.block)
    lang = result["language"]
    if lang and "3" in lang["cuts"] and "int8-outlier" in lang["cuts"]["3"]:
        r = lang["cuts"]["3"]["int8-outlier"]
        result["target_met"] = (r["bytes_vs_fp32"] <= 0.30 and abs(r["perplexity_vs_fp32_pct"]) <= 0.5
                                and r["top1_agreement"] >= 0.99)
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
