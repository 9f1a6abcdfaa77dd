"""Optional weight compression: int8 Linear weights with 16-bit outlier features.

Public API::

    Int8MixedLinear.from_linear(linear, act_absmax=None, cfg=QuantConfig())
    quantize_module(module, skip=("lm_head", "head"), calibration=None) -> int   # layers replaced
    quantize_stage(stage) -> int
    resident_bytes(module) -> int
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from worker.quant.linear import Int8MixedLinear, QuantConfig, select_outliers
from worker.quant.memory import resident_bytes
from worker.quant.outliers import block_key

logger = logging.getLogger(__name__)

__all__ = ["Int8MixedLinear", "QuantConfig", "select_outliers", "quantize_module", "quantize_stage", "collect_act_absmax",
           "linear_like", "resident_bytes"]

SKIP = ("lm_head", "head")  # output heads stay in full precision (as LLM.int8 does)


def linear_like(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or (type(m).__name__ == "Conv1D" and hasattr(m, "nf"))


def quantize_module(module: nn.Module, skip: tuple[str, ...] = SKIP,
                    calibration: dict[str, torch.Tensor] | None = None, cfg: QuantConfig = QuantConfig(),
                    outliers: dict[str, list[int]] | None = None) -> int:
    """Replace every Linear (and GPT-2 Conv1D) in ``module`` by :class:`Int8MixedLinear`.

    ``skip``: last name components left untouched. ``calibration``: per-module
    (qualified name) absmax of its input features, from :func:`collect_act_absmax`.
    ``outliers``: per-module feature indices fixed beforehand (wins over both).
    Returns the number of layers replaced.
    """
    targets = [(name, m) for name, m in module.named_modules()
               if linear_like(m) and name.rsplit(".", 1)[-1] not in skip]
    with torch.no_grad():
        for name, m in targets:
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            act = None if calibration is None else calibration.get(name)
            fixed = None if outliers is None else outliers.get(name)
            setattr(parent, attr, Int8MixedLinear.from_linear(m, act, cfg, outliers=fixed))
    logger.info("quantized %d linear layers to int8-mixed", len(targets))
    return len(targets)


def quantize_stage(stage: nn.Module, cfg: QuantConfig = QuantConfig(),
                   outliers: dict[str, list[int]] | None = None) -> int:
    """Quantize a loaded stage in place (its blocks' Linear weights; heads stay fp).

    ``outliers``: the model's stored calibration (:mod:`worker.quant.outliers`,
    keys ``"{block}/{path}"``); layers it does not list choose from their weights.
    """
    by_name = None
    blocks = getattr(stage, "block_names", None)  # {absolute block index: qualified module name}
    if outliers is not None and blocks:
        by_name = {}
        for i, prefix in blocks.items():
            for name, _ in stage.get_submodule(prefix).named_modules():
                if name and block_key(i, name) in outliers:
                    by_name[f"{prefix}.{name}"] = outliers[block_key(i, name)]
    return quantize_module(stage, cfg=cfg, outliers=by_name)


def collect_act_absmax(module: nn.Module, run) -> dict[str, torch.Tensor]:
    """Run ``run()`` once with hooks and return each Linear's input-feature absmax."""
    stats: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in module.named_modules():
        if linear_like(m):
            def hook(_m, args, _name=name):
                a = args[0].detach().abs().flatten(0, -2).amax(dim=0).float()
                stats[_name] = a if _name not in stats else torch.maximum(stats[_name], a)
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return stats
