"""Llama-family models of 1B and 3B shapes with seeded random weights, built from config classes (no hub).

The GPU benchmarks need models large enough that a GPU's work, not Python's,
sets the pace. Their shapes are those of Llama 3.2 1B and 3B (hidden size,
layers, heads, grouped key-value heads, 128k vocabulary, tied embeddings);
the weights are drawn from a seeded generator on the chosen device and saved
in bfloat16 (a float32 stage holds those values exactly), with a manifest
hashed like any stored model's. Throughput does not depend on the values;
the tokens they produce mean nothing, but are the same on every run.

    python -m bench.gpu.models --sizes 1b,3b --out /tmp/tessera-gpu-models [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from worker.store.manifest import build_manifest, write_manifest

_LLAMA3 = {"vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0, "tie_word_embeddings": True,
           "bos_token_id": 128000, "eos_token_id": 128001, "rms_norm_eps": 1e-5}
SIZES = {  # Llama 3.2 shapes; "tiny" checks the script on a CPU in seconds
    "1b": {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64},
    "3b": {**_LLAMA3, "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
           "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128},
    "tiny": {"vocab_size": 128256, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 6,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
             "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2},
}


def build(size: str, out: Path, device: str = "cuda", seed: int = 0) -> Path:
    """Write the ``size`` model to ``out/llama-<size>`` (once; an existing one is kept) and return the folder."""
    folder = out / f"llama-{size}"
    if (folder / "manifest.json").is_file():
        return folder
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**SIZES[size])).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    write_manifest(folder, build_manifest(folder, f"llama-{size}", source=f"seeded random weights (seed {seed}), "
                                          "Llama 3.2 shape, bench.gpu.models"))
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu.models", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1b,3b", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--out", default="/tmp/tessera-gpu-models")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    for size in args.sizes.split(","):
        t0 = time.perf_counter()
        folder = build(size, Path(args.out), args.device)
        print(f"{folder} ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
