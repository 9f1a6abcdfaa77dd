"""Tiny randomly initialised causal LMs of every checked architecture, for tests and the support matrix.

``save_tiny_model(arch, out_dir)`` writes a Hugging Face directory (config +
safetensors, no tokenizer) of a 4-block model with a 256-token vocabulary,
seeded, in well under a second, built from transformers' config classes (no
hub). :data:`ARCHITECTURES` names every one (and :data:`REFUSED` a few the
store refuses, for the tests of those refusals). Families with sliding-window
layers use a window of 8 on some layers (alternating where the family does),
so that decoding past it exercises caches of mixed layer types; GPT-2 comes
with both attention scalings.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 256
BLOCKS = 4

_COMMON = {"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": BLOCKS,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
           "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_TOKENS = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_WINDOW = {"sliding_window": 8}
_MOE = {"num_experts_per_tok": 2, "moe_intermediate_size": 32}
_GPT2 = {**_TOKENS, "n_embd": 64, "n_layer": BLOCKS, "n_head": 4, "n_positions": 256}

# architecture name -> (config.model_type, config values)
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "llama": ("llama", _COMMON),
    "qwen2": ("qwen2", {**_COMMON, **_WINDOW, "use_sliding_window": True, "max_window_layers": 2}),
    "qwen3": ("qwen3", {**_COMMON, **_WINDOW, "head_dim": 16, "use_sliding_window": True, "max_window_layers": 2}),
    "mistral": ("mistral", {**_COMMON, **_WINDOW}),
    "phi3": ("phi3", _COMMON),
    "gemma": ("gemma", {**_COMMON, "head_dim": 16}),
    "gemma2": ("gemma2", {**_COMMON, **_WINDOW, "head_dim": 16}),
    "gemma3": ("gemma3_text", {**_COMMON, **_WINDOW, "head_dim": 16, "sliding_window_pattern": 2}),
    "gpt2": ("gpt2", _GPT2),
    "gpt2-inverse-layer-scaling": ("gpt2", {**_GPT2, "scale_attn_by_inverse_layer_idx": True}),
    "gpt_neox": ("gpt_neox", {**_TOKENS, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": BLOCKS,
                              "num_attention_heads": 4, "max_position_embeddings": 256}),
    "opt": ("opt", {**_TOKENS, "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": BLOCKS,
                    "num_attention_heads": 4, "max_position_embeddings": 256, "word_embed_proj_dim": 32}),
    "mixtral": ("mixtral", {**_COMMON, **_WINDOW, "num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_moe": ("qwen2_moe", {**_COMMON, **_MOE, "num_experts": 4, "shared_expert_intermediate_size": 64}),
    "qwen3_moe": ("qwen3_moe", {**_COMMON, **_MOE, "num_experts": 4, "head_dim": 16}),
    "bloom": ("bloom", {**_TOKENS, "hidden_size": 64, "n_layer": BLOCKS, "n_head": 4}),
    "gptj": ("gptj", {**_TOKENS, "n_embd": 64, "n_layer": BLOCKS, "n_head": 4, "rotary_dim": 8, "n_positions": 256,
                      "tie_word_embeddings": False}),
}

# architectures the store refuses to import: (config.model_type, config values, what the refusal says)
REFUSED: dict[str, tuple[str, dict, str]] = {
    "bert": ("bert", {**_TOKENS, "hidden_size": 64, "num_hidden_layers": BLOCKS, "num_attention_heads": 4,
                      "intermediate_size": 128}, "this config is an encoder"),
    "mamba": ("mamba", {**_TOKENS, "hidden_size": 64, "num_hidden_layers": BLOCKS, "state_size": 8},
              "keeps recurrent (state-space or linear-attention) state"),
    "qwen3_next": ("qwen3_next", {**_COMMON, **_MOE, "head_dim": 16, "num_experts": 4,
                                  "shared_expert_intermediate_size": 32, "linear_num_value_heads": 4,
                                  "linear_num_key_heads": 2, "linear_key_head_dim": 16, "linear_value_head_dim": 16},
                   "keeps recurrent (state-space or linear-attention) state"),
    "openai-gpt": ("openai-gpt", {"vocab_size": VOCAB, "n_embd": 64, "n_layer": BLOCKS, "n_head": 4, "n_positions": 256},
                   "takes no inputs_embeds or past_key_values"),
}


def tiny_config(arch: str):
    known = {**ARCHITECTURES, **{name: r[:2] for name, r in REFUSED.items()}}
    if arch not in known:
        raise ValueError(f"unknown tiny architecture {arch!r}; one of {', '.join(known)}")
    model_type, values = known[arch]
    return AutoConfig.for_model(model_type, **values)


def save_tiny_model(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random ``arch`` model to ``out_dir`` and return it."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=torch.float32)
    model.save_pretrained(out_dir)
    return Path(out_dir)
