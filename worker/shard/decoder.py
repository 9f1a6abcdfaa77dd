"""Stages of Hugging Face causal LMs, one code path for every family.

A stage is the model's own ``*ForCausalLM``, built for the whole config, in
which the modules it does not run are stand-ins without weights: decoder
layers before its span hand the hidden states on, those after it and the
output modules (final norm, head) are never reached unless it is the tail, the
input modules (embeddings) are skipped unless it is the head. Running the
library's own ``forward`` keeps positions, masks, rotary embeddings, per-layer
attention types, embedding scales and logit soft-capping exactly as in the
unsplit model, and every layer keeps its ABSOLUTE index (GPT-2's
inverse-layer-index scaling, sliding-window patterns, the cache slot it
writes), which is why a chain of stages reproduces its logits bit for bit.

A non-head stage passes its input as ``inputs_embeds`` and a pre-hook on its
first layer puts it back as that layer's hidden states, so what the forward
does to embeddings before the layers (GPT-2's positions, Gemma's scale) is
not applied twice; a non-tail stage stops at a hook after its last layer.
The per-session cache (:class:`SpanCache`) has the whole model's layer layout
and answers length questions from the stage's own layers, so positions and
mask sizes agree on every stage without being passed along.

Only the tensors of the served stages are read from disk; transformers' own
loader converts them (renamed keys, fused MoE experts) into the meta-built
model.
"""

from __future__ import annotations

import inspect
import logging
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import convert_and_load_state_dict_in_model
from transformers.modeling_utils import LoadStateDictConfig
from transformers.utils import logging as hf_logging

from proto.errors import ModelError
from worker.shard.batch import BatchStates, batchable, forward_batch
from worker.shard.layout import StageLayout, relative
from worker.shard.skeleton import Passthrough, Skeleton, meta_model
from worker.shard.weights import read_tensors
from worker.stage import StageSpec

logger = logging.getLogger(__name__)


class Unserved(nn.Module):
    """Stands in for a module this stage never runs; fails loudly if it is reached."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.what} is not served by this stage")


class Skipped(nn.Module):
    """Stands in for an input module (position embedding, projection) on a non-head stage.

    Its result only feeds the hidden states that the first layer's pre-hook
    replaces, so a zero that broadcasts against anything does.
    """

    def forward(self, *args, **kwargs):
        like = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        return torch.zeros((), device=like.device)


class _Handoff(Exception):
    """Raised after a non-tail stage's last layer to stop the forward with its output."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden


class SpanCache(DynamicCache):
    """The whole model's KV cache layout, of which a stage fills only its layers ``[start, end)``.

    Length and mask-size questions about a layer outside the span are answered
    by a served layer of the same kind, so the forward computes the positions
    and masks it would compute in the unsplit model.
    """

    def __init__(self, config, start: int, end: int):
        super().__init__(config=config)
        kinds: dict[tuple, int] = {}
        for i in range(start, end):
            kinds.setdefault(self._kind(i), i)
        self._proxy = [i if start <= i < end else kinds.get(self._kind(i), start) for i in range(len(self.layers))]

    def _kind(self, i: int) -> tuple:
        layer = self.layers[i]
        return type(layer), getattr(layer, "sliding_window", None)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return super().get_seq_length(self._proxy[layer_idx] if layer_idx < len(self._proxy) else layer_idx)

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return super().get_mask_sizes(query_length, self._proxy[layer_idx] if layer_idx < len(self._proxy)
                                      else layer_idx)


def cache_bytes(cache: Any | None) -> int:
    """Bytes held by a transformers cache (0 for None or an empty cache)."""
    if cache is None:
        return 0
    tensors = []
    for layer in getattr(cache, "layers", None) or []:
        tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class DecoderStage(nn.Module):
    """A span of a causal LM; implements :class:`worker.stage.Stage`."""

    def __init__(self, spec: StageSpec, model: nn.Module, skel: Skeleton, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.spec, self.model, self.device, self.dtype = spec, model, device, dtype
        self.block_names = {i: f"model.{skel.layers_path}.{i}" for i in range(spec.start, spec.end)}
        self._entry = threading.local()  # this call's input, for the first layer's pre-hook (sessions run in threads)
        self._keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._batchable: bool | None = None  # found on first use
        self._batches = BatchStates()  # each group's last batched step's cache, reused by its next one
        layers = model.get_submodule(skel.layers_path)
        if not spec.is_head:
            layers[spec.start].register_forward_pre_hook(self._enter, with_kwargs=True)
        if not spec.is_tail:
            layers[spec.end - 1].register_forward_hook(self._leave)

    def _enter(self, _module, args, kwargs):
        h = self._entry.x
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    @staticmethod
    def _leave(_module, _args, output):
        raise _Handoff(output[0] if isinstance(output, tuple) else output)

    def new_cache(self) -> SpanCache:
        return SpanCache(self.model.config, self.spec.start, self.spec.end)

    def cache_len(self, cache: Any | None) -> int:
        return 0 if cache is None else int(cache.get_seq_length())

    def cache_bytes(self, cache: Any | None) -> int:
        return cache_bytes(cache)

    def batchable(self) -> bool:
        """Whether decode steps of several sessions can run as one batch (:mod:`worker.shard.batch`)."""
        if self._batchable is None:
            self._batchable = batchable(self)
        return self._batchable

    def forward_batch(self, xs, caches, *, last: bool = False):
        """One forward for the one-position steps ``xs`` of sessions with ``caches``; outputs in order.
        Called from one thread at a time (the stage's scheduler), which the kept batch cache relies on."""
        return forward_batch(self, xs, caches, last, self._batches.of(caches))

    def end_batch(self) -> None:
        """Drop the kept batch caches: the sessions that made them ended."""
        self._batches = BatchStates()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, cache: Any | None = None, *, last: bool = False, **model_kw) -> torch.Tensor:
        """Token ids ``(B, T)`` (head) or hidden states ``(B, T, C)`` in; hidden or logits ``(B, T, V)`` out
        (``(B, 1, V)`` on a tail with ``last``: the LM head runs on the last position only). ``model_kw``:
        extra arguments of the model's forward (a batch's attention mask and positions)."""
        x = x.to(self.device)
        kw: dict[str, Any] = {"past_key_values": cache, "use_cache": cache is not None, **model_kw}
        if self.spec.is_head:
            kw["input_ids"] = x.long()
        else:
            self._entry.x = kw["inputs_embeds"] = x.to(self.dtype)
        try:
            if self.spec.is_tail:
                if self._keep_logits:
                    return self.model(**kw, logits_to_keep=1 if last else 0).logits
                logits = self.model(**kw).logits
                return logits[:, -1:] if last else logits
            self.model(**kw)
        except _Handoff as done:
            return done.hidden
        finally:
            self._entry.x = None
        raise ModelError(f"stage [{self.spec.start}, {self.spec.end}) ended without running its last layer")


def _replace(model: nn.Module, names, make) -> None:
    done: list[str] = []
    for name in sorted(names):
        if any(name.startswith(d + ".") for d in done):
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, make(name))
        done.append(name)


def build_decoder_stage(model_dir: Path, config, skel: Skeleton, layout: StageLayout, spec: StageSpec,
                        device: torch.device, dtype: torch.dtype) -> DecoderStage:
    """Load only the weights of ``spec``'s stages into a :class:`DecoderStage`."""
    model = meta_model(config, dtype)
    layers = model.get_submodule(skel.layers_path)
    for i in range(skel.num_layers):
        if i < spec.start:
            layers[i] = Passthrough(skel.layer_tuples)
        elif i >= spec.end:
            layers[i] = Unserved(f"block {i}")
    _replace(model, skel.unused, Unserved)
    if not spec.is_head:
        _replace(model, skel.before, lambda _n: Skipped())
    if not spec.is_tail:
        _replace(model, skel.after, Unserved)
    if not (spec.is_head and spec.is_tail):
        model.all_tied_weights_keys = {}  # a lone tail reads the tied matrix as its own head weight
    state = _stage_state(model_dir, skel, layout, spec)
    _load(model, state, device, dtype)
    stage = DecoderStage(spec, model, skel, device, dtype).eval()
    logger.info("loaded %s blocks [%d, %d) on %s (%s)", spec.model, spec.start, spec.end, device, dtype)
    return stage


def _stage_state(model_dir: Path, skel: Skeleton, layout: StageLayout, spec: StageSpec) -> dict[str, torch.Tensor]:
    """``{key the loader understands: tensor}`` for the served stages: checkpoint keys, except that a tail
    without the input stage loads a tied embedding matrix as its head's own weight."""
    wanted: dict[str, str] = {}  # loader key -> checkpoint key
    heads = {relative(hk, skel.decoder_path): hk for hk in skel.head_keys}
    for name, entries in layout.span_entries(spec.start, spec.end).items():
        for logical, ck in entries:
            tied = name == "output" and skel.side_of(skel.model_keys([ck])[ck] or "") == "input"
            wanted[heads[logical] if tied and not spec.is_head else ck] = ck
    tensors = read_tensors(model_dir, set(wanted.values()))
    return {key: tensors[ck] for key, ck in wanted.items()}


def _load(model: nn.Module, state: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> None:
    """transformers' own loading of ``state`` into the meta-built ``model`` (conversions, non-persistent buffers)."""
    hf_logging.disable_progress_bar()  # a worker logs one line per stage, not a bar per load
    cfg = LoadStateDictConfig(dtype=dtype, dtype_plan=model._get_dtype_plan(dtype), device_map={"": str(device)},
                              weight_mapping=get_model_conversion_mapping(model))
    info, _ = convert_and_load_state_dict_in_model(model, state, cfg)
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    bad = sorted(info.unexpected_keys) + sorted(k for k, *_ in info.mismatched_keys)
    missing = sorted(info.missing_keys - tied)
    if bad or missing or info.conversion_errors or info.error_msgs:
        raise ModelError(f"stage weights do not fit the model: missing {missing[:4]}, unexpected or mismatched "
                         f"{bad[:4]}{', ' + str(info.conversion_errors)[:200] if info.conversion_errors else ''}; "
                         "is the checkpoint complete?")
    model._finalize_model_loading(model, cfg, info)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise ModelError(f"stage tensors {left[:4]} were not materialised; this architecture cannot be sharded")
