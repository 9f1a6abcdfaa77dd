"""Stages of Hugging Face encoders (BERT family) that embed a text: one pass, no cache.

A stage is the model's own base model (``AutoModel``, e.g. ``BertModel``) built on
the meta device, with the layers outside its span replaced by stand-ins, as for
decoders (:mod:`worker.shard.decoder`): layers before the span hand the hidden
states on, those after it are never reached, a non-tail stage stops at a hook
after its last layer. On a non-head stage the module that holds the input
embeddings (``embeddings``) is replaced by :class:`Entry`, which returns the
stage's input as the embedding output, so the library's own forward builds the
attention mask from it; any other input-side module (ELECTRA's projection)
becomes an identity. The pooler is dropped: a sentence embedding pools the
last hidden states. The tail pools as the model's sentence-transformers
configuration says (mean over tokens, the first token, or the maximum) and
L2-normalises, in float32.

A job embeds one text (batch 1, no padding), so every stage builds the
all-ones attention mask itself; nothing but the hidden states crosses a cut.
The pooling is stored in ``config.json`` as ``tessera_embedding`` when the
model is stored (:func:`embedding_settings`), so the config hash commits to it.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM, PreTrainedModel
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming

from proto.errors import ModelError
from worker.shard.decoder import Unserved, _Handoff, _load, _stage_state
from worker.shard.layout import StageLayout
from worker.shard.skeleton import Passthrough, Skeleton, _trace, find_layers
from worker.stage import StageSpec, Stateless

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "max")


def is_encoder(config) -> bool:
    """A transformers config of a bidirectional encoder (BERT, RoBERTa, MiniLM...) rather than a decoder."""
    return type(config) in AutoModelForMaskedLM._model_mapping and not getattr(config, "is_decoder", False)


def embedding_settings(src: Path, config) -> dict:
    """``tessera_embedding`` of an encoder: the pooling its sentence-transformers files name (mean and
    normalised when there are none) and the most tokens a text keeps (the rest is cut, as they do)."""
    src = Path(src)
    pooling, normalize = "mean", True
    modules = src / "modules.json"
    if modules.is_file():
        mods = json.loads(modules.read_text())
        normalize = any(m.get("type", "").endswith("Normalize") for m in mods)
        pool_dir = next((m.get("path", "") for m in mods if m.get("type", "").endswith("Pooling")), None)
        pool_cfg = src / (pool_dir or "1_Pooling") / "config.json"
        if pool_cfg.is_file():
            p = json.loads(pool_cfg.read_text())
            modes = [m for m, key in (("mean", "pooling_mode_mean_tokens"), ("cls", "pooling_mode_cls_token"),
                                      ("max", "pooling_mode_max_tokens")) if p.get(key)]
            others = [k for k, v in p.items() if k.startswith("pooling_mode") and v and k not in (
                "pooling_mode_mean_tokens", "pooling_mode_cls_token", "pooling_mode_max_tokens")]
            if len(modes) != 1 or others:
                raise ModelError(f"{pool_cfg} asks for pooling {modes + others}; one of {POOLINGS} is supported")
            pooling = modes[0]
    max_tokens = int(getattr(config, "max_position_embeddings", 512))
    st = src / "sentence_bert_config.json"
    if st.is_file():
        max_tokens = min(max_tokens, int(json.loads(st.read_text()).get("max_seq_length", max_tokens)))
    return {"pooling": pooling, "normalize": normalize, "max_tokens": max_tokens}


class NoPooler(nn.Module):
    """Stands in for the pooler: sentence embeddings pool the last hidden states themselves."""

    def forward(self, *args, **kwargs):
        return None


class Entry(nn.Module):
    """Stands in for the embeddings on a non-head stage: the stage's input is the embedding output."""

    def __init__(self, local: threading.local):
        super().__init__()
        self.local = local

    def forward(self, *args, **kwargs):
        return self.local.x


def meta_encoder(config, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The base model of an encoder config on the meta device (in ``dtype``), its pooler dropped."""
    if not is_encoder(config):
        raise ModelError(f"model_type {config.model_type!r} is not an encoder transformers can build")
    try:
        with torch.device("meta"):
            model = AutoModel.from_config(config, dtype=dtype)
    except Exception as exc:  # an inconsistent config fails model construction in any number of ways
        raise ModelError(f"transformers cannot build model_type {config.model_type!r} from this config.json "
                         f"({type(exc).__name__}: {exc})") from exc
    if isinstance(getattr(model, "pooler", None), nn.Module):
        model.pooler = NoPooler()
    return model


def encoder_skeleton(config) -> Skeleton:
    """Analyse an encoder; ModelError with the reason when it cannot be cut between layers."""
    model = meta_encoder(config)
    n = int(config.num_hidden_layers)
    layers_path = find_layers(model, n, "encoder layers")
    before, after, unused = _trace(meta_encoder(config), layers_path, n, config, False, cached=False)
    input_modules(model, before)
    mapping = get_model_conversion_mapping(model)
    return Skeleton(model, layers_path, n, frozenset(before), frozenset(after), frozenset(unused), "", False,
                    tuple(t for t in mapping if isinstance(t, WeightRenaming)),
                    tuple(t for t in mapping if isinstance(t, WeightConverter)), frozenset(model.state_dict()))


def input_modules(model: nn.Module, before) -> tuple[str, list[str]]:
    """The top-level module holding the input embeddings (e.g. ``embeddings``), which a non-head stage
    replaces by :class:`Entry`, and the other top-level modules that run before the layers (e.g.
    ELECTRA's ``embeddings_project``), which it replaces by an identity on the hidden states."""
    emb = model.get_input_embeddings()
    emb_name = next(name for name, m in model.named_modules() if m is emb)
    entry = emb_name.split(".")[0]
    if entry == emb_name:
        raise ModelError(f"the input embeddings {emb_name} of {type(model).__name__} are not inside an embeddings "
                         "module; a stage after the first could not skip them, so this encoder cannot be sharded")
    return entry, sorted({name.split(".")[0] for name in before} - {entry})


class Identity(nn.Module):
    """Stands in for an input-side module on a non-head stage: hands the hidden states on."""

    def forward(self, *args, **kwargs):
        return args[0] if args else next(iter(kwargs.values()))


def pool(h: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Sentence embeddings ``(B, C)`` from last hidden states ``(B, T, C)``, in float32, as
    sentence-transformers' Pooling and Normalize modules compute them."""
    h = h.float()
    m = mask.unsqueeze(-1).expand(h.size()).to(h.dtype)
    if pooling == "mean":
        e = torch.sum(h * m, 1) / torch.clamp(m.sum(1), min=1e-9)
    elif pooling == "cls":
        e = h[:, 0]
    elif pooling == "max":
        e = torch.max(h.masked_fill(m == 0, -1e9), 1).values
    else:
        raise ModelError(f"pooling {pooling!r} is not one of {POOLINGS}")
    return F.normalize(e, p=2, dim=1) if normalize else e


class EncoderStage(Stateless, nn.Module):
    """A span of an encoder; implements :class:`worker.stage.Stage` (stateless)."""

    def __init__(self, spec: StageSpec, model: nn.Module, skel: Skeleton, settings: dict, entry: threading.local,
                 device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.spec, self.model, self.device, self.dtype = spec, model, device, dtype
        self.pooling, self.normalize = settings["pooling"], bool(settings["normalize"])
        self.block_names = {i: f"model.{skel.layers_path}.{i}" for i in range(spec.start, spec.end)}
        self._entry = entry  # this call's input, read by the Entry stand-in (sessions run in threads)
        if not spec.is_tail:
            model.get_submodule(skel.layers_path)[spec.end - 1].register_forward_hook(self._leave)

    @staticmethod
    def _leave(_module, _args, output):
        raise _Handoff(output[0] if isinstance(output, tuple) else output)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, cache: Any | None = None, *, last: bool = False) -> torch.Tensor:
        """Token ids ``(B, T)`` (head) or hidden states ``(B, T, C)`` in; hidden states, or the tail's
        embeddings ``(B, C)`` float32, out."""
        x = x.to(self.device)
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=self.device)
        kw: dict[str, Any] = {"attention_mask": mask}
        if self.spec.is_head:
            kw["input_ids"] = x.long()
        else:
            self._entry.x = kw["inputs_embeds"] = x.to(self.dtype)
        try:
            out = self.model(**kw)
        except _Handoff as done:
            return done.hidden
        finally:
            self._entry.x = None
        if not self.spec.is_tail:
            raise ModelError(f"stage [{self.spec.start}, {self.spec.end}) ended without running its last layer")
        return pool(out.last_hidden_state, mask, self.pooling, self.normalize)


def build_encoder_stage(model_dir: Path, config, skel: Skeleton, layout: StageLayout, spec: StageSpec,
                        settings: dict, device: torch.device, dtype: torch.dtype) -> EncoderStage:
    """Load only the weights of ``spec``'s stages into an :class:`EncoderStage`."""
    model = meta_encoder(config, dtype)
    layers = model.get_submodule(skel.layers_path)
    for i in range(skel.num_layers):
        if i < spec.start:
            layers[i] = Passthrough(False)
        elif i >= spec.end:
            layers[i] = Unserved(f"block {i}")
    local = threading.local()
    if not spec.is_head:
        entry, others = input_modules(model, skel.before)
        setattr(model, entry, Entry(local))
        for name in others:
            setattr(model, name, Identity())
    _load(model, _stage_state(model_dir, skel, layout, spec), device, dtype)
    stage = EncoderStage(spec, model, skel, settings, local, device, dtype).eval()
    logger.info("loaded %s blocks [%d, %d) on %s (%s)", spec.model, spec.start, spec.end, device, dtype)
    return stage


def load_encoder(model_dir: Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The unsplit encoder with the stored weights and its pooling: ``model(ids) -> (B, C)`` embeddings."""
    settings = json.loads((Path(model_dir) / "config.json").read_text())["tessera_embedding"]
    base = AutoModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    return _Pooled(base, settings).eval()


class _Pooled(nn.Module):
    def __init__(self, base: nn.Module, settings: dict):
        super().__init__()
        self.base, self.settings = base, settings

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(ids)
        h = self.base(input_ids=ids, attention_mask=mask).last_hidden_state
        return pool(h, mask, self.settings["pooling"], self.settings["normalize"])
