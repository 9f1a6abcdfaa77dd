"""Tiny randomly initialised models of every checked kind, for tests and the support matrix.

``save_tiny_model(arch, out_dir)`` writes a Hugging Face directory (config +
safetensors, no tokenizer) of a 4-block model with a 256-token vocabulary,
seeded, in well under a second, built from transformers' config classes (no
hub). :data:`ARCHITECTURES` names every one (and :data:`REFUSED` a few the
store refuses, for the tests of those refusals); :data:`ENCODERS` (and
:data:`REFUSED_ENCODERS`) are base encoders, stored as embedding models. Families with sliding-window
layers use a window of 8 on some layers (alternating where the family does),
so that decoding past it exercises caches of mixed layer types; GPT-2 comes
with both attention scalings. :class:`TinyResNet` is a user model (no Hugging
Face config) whose skip connections cross stage cuts.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

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

_ENC = {**_TOKENS, "hidden_size": 64, "num_hidden_layers": BLOCKS, "num_attention_heads": 4, "intermediate_size": 128}

# encoders stored as embedding models (base model, pooler included): architecture -> (config.model_type, values)
ENCODERS: dict[str, tuple[str, dict]] = {
    "bert": ("bert", _ENC),
    "roberta": ("roberta", {**_ENC, "pad_token_id": 1, "max_position_embeddings": 130}),
    "electra": ("electra", {**_ENC, "embedding_size": 32}),
    "distilbert": ("distilbert", {**_TOKENS, "dim": 64, "n_layers": BLOCKS, "n_heads": 4, "hidden_dim": 128}),
}

# encoders the store refuses: (config.model_type, config values, what the refusal says)
REFUSED_ENCODERS: dict[str, tuple[str, dict, str]] = {
    "albert": ("albert", {**_ENC, "embedding_size": 32}, "cannot tell which module list holds the 4 encoder layers"),
    "mpnet": ("mpnet", _ENC, "cannot trace MPNetModel's forward"),
}

# architectures the store refuses to import: (config.model_type, config values, what the refusal says)
REFUSED: dict[str, tuple[str, dict, str]] = {
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
    known = {**ARCHITECTURES, **ENCODERS, **{name: r[:2] for name, r in {**REFUSED, **REFUSED_ENCODERS}.items()}}
    if arch not in known:
        raise ValueError(f"unknown tiny architecture {arch!r}; one of {', '.join(known)}")
    model_type, values = known[arch]
    return AutoConfig.for_model(model_type, **values)


def save_tiny_model(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random ``arch`` model to ``out_dir`` and return it."""
    torch.manual_seed(seed)
    auto = AutoModel if arch in ENCODERS or arch in REFUSED_ENCODERS else AutoModelForCausalLM
    model = auto.from_config(tiny_config(arch), dtype=torch.float32)
    model.save_pretrained(out_dir)
    return Path(out_dir)


class ResBlock(nn.Module):
    """conv-bn-relu-conv-bn plus its input, then relu."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(width), nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, H, W)
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    """stem | residual blocks | pool + linear head, with two skips across blocks: the stem's output is
    added back after block 2 (it crosses the cuts before blocks 1 and 2), and the raw input feeds the
    head beside the blocks (it crosses every cut)."""

    def __init__(self, width: int = 8, depth: int = 4, num_classes: int = 10, channels: int = 3, size: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, num_classes)
        self.direct = nn.Linear(channels * size * size, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # (B, C, S, S)
        x = F.relu(self.stem(image))  # (B, W, S, S)
        skip = x
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == 2:
                x = x + skip
        return self.head(x.mean((2, 3))) + self.direct(image.flatten(1))  # (B, K)


def tiny_resnet(seed: int = 0, **kwargs) -> TinyResNet:
    """A TinyResNet with seeded weights and non-trivial batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TinyResNet(**kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


class TinyBranchy(nn.Module):
    """A user model whose forward branches on a tensor's value: torch.fx cannot trace it (refused)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(width, width), nn.Linear(width, width)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W)
        x = self.blocks[0](x)
        if x.sum() > 0:
            x = -x
        return self.blocks[1](x)
