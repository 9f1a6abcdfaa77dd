"""Stages of Hugging Face decoders: Llama-style (Llama, Qwen2, Mistral) and GPT-2.

A stage is the family's own base model class (``LlamaModel``, ``GPT2Model``...)
built for ``end - start`` layers, renumbered from 0, with the modules it does
not run removed: the embedding unless it is the head, the final norm and the
LM head unless it is the tail. Running the library's own ``forward`` with
``inputs_embeds`` keeps masks, rotary positions and the cache exactly as in
the unsplit model, which is why a chain of stages reproduces its logits bit
for bit. Positions come from the stage's own cache length, so every stage of a
session agrees on them without passing them along.

Only the tensors of the served stages are read from disk: the model is built
on the meta device and materialised afterwards.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, DynamicCache

from proto.errors import ModelError
from worker.shard.layout import Family, StageLayout
from worker.shard.weights import read_tensors
from worker.stage import StageSpec

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATION = "sdpa"  # the same kernel in stages and in load_full, so logits match bit for bit


class ZeroPositions(nn.Module):
    """Stands in for GPT-2's ``wpe`` on non-head stages: positions were added by the head."""

    def __init__(self, dim: int, dtype: torch.dtype):
        super().__init__()
        self.dim, self.dtype = dim, dtype

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        # (1, T, C) zeros; x + 0.0 == x exactly
        return torch.zeros(*position_ids.shape, self.dim, dtype=self.dtype, device=position_ids.device)


def sub_config(config, fam: Family, start: int, end: int):
    """The model config for layers ``[start, end)`` renumbered from 0."""
    cfg = copy.deepcopy(config)
    setattr(cfg, fam.num_blocks_key, end - start)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, (list, tuple)) and len(types) == getattr(config, fam.num_blocks_key):
        cfg.layer_types = list(types[start:end])  # Qwen2/Mistral sliding-window layers keep their type
    cfg.use_cache = True
    return cfg


def cache_bytes(cache: Any | None) -> int:
    """Bytes held by a transformers cache (0 for None or an empty cache)."""
    if cache is None:
        return 0
    tensors = []
    for layer in getattr(cache, "layers", None) or []:
        tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    if not hasattr(cache, "layers"):  # older cache API
        tensors = list(getattr(cache, "key_cache", [])) + list(getattr(cache, "value_cache", []))
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class DecoderStage(nn.Module):
    """A span of a decoder; implements :class:`worker.stage.Stage`."""

    def __init__(self, spec: StageSpec, base: nn.Module, lm_head: nn.Module | None, fam: Family,
                 device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.spec, self.base, self.lm_head, self.family = spec, base, lm_head, fam
        self.device, self.dtype = device, dtype

    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.base.config)

    def cache_len(self, cache: Any | None) -> int:
        return 0 if cache is None else int(cache.get_seq_length())

    def cache_bytes(self, cache: Any | None) -> int:
        return cache_bytes(cache)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, cache: Any | None = None, *, last: bool = False) -> torch.Tensor:
        """Token ids ``(B, T)`` (head) or hidden states ``(B, T, C)`` in; hidden or logits ``(B, T, V)`` out
        (``(B, 1, V)`` on a tail with ``last``: the LM head runs on the last position only)."""
        x = x.to(self.device)
        if self.spec.is_head:
            h = getattr(self.base, self.family.input_modules[0])(x.long())  # (B, T, C)
        else:
            h = x.to(self.dtype)
        h = self.base(inputs_embeds=h, past_key_values=cache, use_cache=cache is not None).last_hidden_state
        if self.lm_head is None:
            return h
        return self.lm_head(h[:, -1:] if last else h)


def _fix_nonpersistent(base: nn.Module, config, device: torch.device) -> None:
    """Re-create modules whose non-persistent buffers (rotary ``inv_freq``) the meta build left empty."""
    for name, mod in list(base.named_modules()):
        if not getattr(mod, "_non_persistent_buffers_set", None):
            continue
        if name.endswith("rotary_emb") and "." not in name:
            setattr(base, name, type(mod)(config=config).to(device))
        else:
            raise ModelError(f"cannot rebuild module {name} ({type(mod).__name__}) with computed buffers")


def build_decoder_stage(model_dir: Path, layout: StageLayout, fam: Family, spec: StageSpec,
                        device: torch.device, dtype: torch.dtype) -> DecoderStage:
    """Load only the weights of ``spec``'s stages into a :class:`DecoderStage`."""
    config = AutoConfig.from_pretrained(model_dir)
    cfg = sub_config(config, fam, spec.start, spec.end)
    with torch.device("meta"):
        base = AutoModel.from_config(cfg, attn_implementation=ATTN_IMPLEMENTATION)
        lm_head = nn.Linear(cfg.hidden_size if hasattr(cfg, "hidden_size") else cfg.n_embd,
                            cfg.vocab_size, bias=any(n == "lm_head.bias" for n, _ in layout.output))
    if not spec.is_head:
        for m in fam.input_modules:
            setattr(base, m, None)
        if fam.name == "gpt2":
            base.wpe = ZeroPositions(cfg.n_embd, dtype)
    if not spec.is_tail:
        for m in fam.output_modules:
            setattr(base, m, nn.Identity())
        lm_head = None
    base.to_empty(device=device)
    base.to(dtype)
    _fix_nonpersistent(base, cfg, device)
    # checkpoint key -> (module, key inside it)
    targets: dict[str, list[tuple[nn.Module, str]]] = {}
    for stage, entries in layout.span_entries(spec.start, spec.end).items():
        for logical, key in entries:
            if stage.startswith("block."):
                dest = (base, f"{fam.blocks_attr}.{int(stage[6:]) - spec.start}.{logical}")
            elif logical.startswith("lm_head."):
                dest = (lm_head, logical[len("lm_head."):])
            else:
                dest = (base, logical)
            targets.setdefault(key, []).append(dest)
    tensors = read_tensors(model_dir, targets)
    sd_base = {k: tensors[key] for key, dests in targets.items() for mod, k in dests if mod is base}
    _load(base, sd_base)
    if lm_head is not None:
        lm_head.to_empty(device=device)
        lm_head.to(dtype)
        _load(lm_head, {k: tensors[key] for key, dests in targets.items() for mod, k in dests if mod is lm_head})
        emb = getattr(base, fam.input_modules[0], None) if spec.is_head else None
        if emb is not None and dict(layout.output)["lm_head.weight"] == dict(layout.input).get(
                f"{fam.input_modules[0]}.weight"):
            lm_head.weight = emb.weight  # tied embeddings: one copy in memory
    stage = DecoderStage(spec, base, lm_head, fam, device, dtype).eval()
    logger.info("loaded %s blocks [%d, %d) on %s (%s)", spec.model, spec.start, spec.end, device, dtype)
    return stage


def _load(module: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    res = module.load_state_dict(sd, strict=False)
    missing = [k for k in res.missing_keys]
    if missing or res.unexpected_keys:
        raise ModelError(f"stage weights do not fit the model: missing {missing[:4]}, "
                         f"unexpected {res.unexpected_keys[:4]}; is the checkpoint complete?")
