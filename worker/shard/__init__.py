"""Model-agnostic sharding: load the stage serving blocks ``[start, end)`` of a stored model.

``load_stage(model_dir, start, end, device="cpu", dtype=torch.float32, weights="fp32")``
returns an object implementing :class:`worker.stage.Stage` that holds only the
weights of the stages it serves. Hugging Face causal LMs of any family that
transformers builds and that can be cut between decoder layers
(:mod:`worker.shard.decoder`; the README's "Supported models" lists those
checked), and any other PyTorch model cut at single-tensor boundaries with
torch.fx (:mod:`worker.shard.fx`). ``weights="int8-mixed"`` stores the blocks' Linear
weights in int8 with outlier input features in 16 bits (:mod:`worker.quant`).

``load_full(model_dir)`` loads the unsplit reference model: a transformers
``*ForCausalLM`` for decoders, the plain ``nn.Module`` for fx models.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from proto.errors import ModelError
from worker.quant import quantize_stage
from worker.quant.outliers import read_outliers
from worker.shard.decoder import build_decoder_stage
from worker.shard.fx import build_fx_full, build_fx_stage, fx_layout
from worker.shard.layout import StageLayout, hf_layout, is_fx, read_config
from worker.shard.skeleton import Skeleton, hf_config, skeleton
from worker.shard.weights import checkpoint_keys
from worker.stage import Stage, StageSpec

logger = logging.getLogger(__name__)

WEIGHT_FORMATS = ("fp32", "int8-mixed")

__all__ = ["load_stage", "load_full", "stage_layout", "model_skeleton", "WEIGHT_FORMATS"]


def _model_name(model_dir: Path) -> tuple[str, str | None]:
    mf = model_dir / "manifest.json"
    if mf.is_file():
        d = json.loads(mf.read_text())
        return d["name"], d.get("kind")
    return model_dir.name, None


@functools.lru_cache(maxsize=8)
def _skeleton(model_dir: Path, config_text: str) -> Skeleton:
    return skeleton(hf_config(model_dir))


def model_skeleton(model_dir: Path | str) -> Skeleton:
    """The structure of a Hugging Face causal LM directory (cached per config)."""
    model_dir = Path(model_dir).resolve()
    return _skeleton(model_dir, (model_dir / "config.json").read_text())


def stage_layout(model_dir: Path | str) -> StageLayout:
    """Which checkpoint tensors belong to which stage of a stored model."""
    config = read_config(Path(model_dir))
    keys = checkpoint_keys(Path(model_dir))
    if is_fx(config):
        return fx_layout(config, keys)
    return hf_layout(model_skeleton(model_dir), config.get("model_type", ""), keys)


def load_stage(model_dir: Path | str, start: int, end: int, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, weights: str = "fp32") -> Stage:
    """The stage serving blocks ``[start, end)`` of the model stored in ``model_dir``.

    ``weights`` is ``"fp32"`` (the stored weights, cast to ``dtype``) or
    ``"int8-mixed"`` (block Linear weights in int8 + 16-bit outlier features).
    Weights are not verified here; call :func:`worker.store.verify_span` first.
    """
    model_dir = Path(model_dir)
    if weights not in WEIGHT_FORMATS:
        raise ModelError(f"weights must be one of {WEIGHT_FORMATS}, not {weights!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device cuda was asked for but no GPU is visible; use --device cpu")
    config = read_config(model_dir)
    layout = stage_layout(model_dir)
    if not 0 <= start < end <= layout.num_blocks:
        raise ModelError(f"span [{start}, {end}) is not inside [0, {layout.num_blocks}) of {model_dir.name}")
    name, kind = _model_name(model_dir)
    if is_fx(config):
        spec = StageSpec(name, layout.num_blocks, start, end, kind or "classifier")
        stage = build_fx_stage(model_dir, config, spec, device, dtype)
    else:
        spec = StageSpec(name, layout.num_blocks, start, end, kind or "causal-lm")
        stage = build_decoder_stage(model_dir, hf_config(model_dir), model_skeleton(model_dir), layout, spec,
                                    device, dtype)
    if weights == "int8-mixed":
        quantize_stage(stage, outliers=read_outliers(model_dir))
    return stage


def load_full(model_dir: Path | str, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> nn.Module:
    """The unsplit model in eval mode, as a reference for the stages."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    if is_fx(config):
        return build_fx_full(model_dir, config, torch.device(device), dtype)
    hf_logging.disable_progress_bar()  # callers show their own progress
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)  # the model's default attention, as stages
    return model.to(device).eval()
