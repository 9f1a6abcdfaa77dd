"""Tiny randomly initialised decoders for tests and local experiments.

``save_tiny_model("gpt2" | "llama" | "qwen2" | "mistral", out_dir)`` writes a
Hugging Face directory (config + safetensors, no tokenizer) of a 4-block
model with a 256-token vocabulary, seeded, in well under a second. The Qwen2
and Mistral configs use a sliding window of 8 on some layers so that caches
of mixed layer types are exercised.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

VOCAB = 256
BLOCKS = 4


def tiny_config(family: str):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=BLOCKS,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=BLOCKS, n_head=4, n_positions=256,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common, use_sliding_window=True, sliding_window=8, max_window_layers=2)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=8)
    raise ValueError(f"unknown tiny family {family!r}")


def save_tiny_model(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random ``family`` model to ``out_dir`` and return it."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family), dtype=torch.float32)
    model.save_pretrained(out_dir)
    return Path(out_dir)
