"""Outlier features of a causal LM, chosen once from real activations and stored beside the weights.

LLM.int8's rule (an input feature is an outlier when some activation reaches
``|x| >= 6``) needs activations, which a node serving a middle span cannot
compute on its own. So when a causal LM is stored, the whole model runs once
over a fixed calibration text and the chosen feature indices of every block
Linear are written to ``int8_outliers.json``; ``load_stage(...,
weights="int8-mixed")`` reads the entries of its own blocks. Every node thus
quantizes with the same indices. Keys are ``"{block}/{path in block}"``, e.g.
``"3/self_attn.q_proj"``
(:mod:`worker.quant.outliers`).

Measured on SmolLM2 over 2,048 tokens of pydoc text (``python -m
bench.quant_report smollm2-135m --tokens 2048``): perplexity +0.12% over fp32
and top-1 agreement 98.5%, against +0.21% and 97.8% with outliers chosen from
the weights alone (``--weight-outliers``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer

from worker.quant import collect_act_absmax, linear_like
from worker.quant.linear import QuantConfig, select_outliers
from worker.quant.outliers import OUTLIERS_FILE, block_key
from worker.shard import load_stage, stage_layout

logger = logging.getLogger(__name__)

CALIBRATION_TEXT = (
    "The history of science is the study of how people came to understand the natural world. "
    "Early astronomers charted the motion of the planets; chemists learned why substances combine; "
    "physicians asked how the body fights disease. Today, computers help researchers test ideas quickly.\n"
    "def mean(values):\n    return sum(values) / len(values)\n"
    "Q: What is the capital of Italy? A: Rome. Q: How many legs does a spider have? A: Eight.\n"
) * 2


def calibrate_outliers(model_dir: Path, cfg: QuantConfig = QuantConfig()) -> dict[str, list[int]]:
    """Run the whole decoder on :data:`CALIBRATION_TEXT`; return outlier features per block Linear."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(CALIBRATION_TEXT, return_tensors="pt").input_ids
    stage = load_stage(model_dir, 0, stage_layout(model_dir).num_blocks)
    stats = collect_act_absmax(stage, lambda: stage(ids))
    out: dict[str, list[int]] = {}
    for block, prefix in stage.block_names.items():
        for path, m in stage.get_submodule(prefix).named_modules():
            if linear_like(m):
                w = m.weight if isinstance(m, torch.nn.Linear) else m.weight.t()
                act = stats.get(f"{prefix}.{path}")  # None for a layer the text never reached (an unrouted expert)
                out[block_key(block, path)] = select_outliers(w, act, cfg).tolist()
    return out


def write_outliers(model_dir: Path, cfg: QuantConfig = QuantConfig()) -> Path:
    layers = calibrate_outliers(model_dir, cfg)
    path = Path(model_dir) / OUTLIERS_FILE
    path.write_text(json.dumps({"format": 1, "act_threshold": cfg.act_threshold, "max_frac": cfg.max_frac,
                                "layers": layers}, sort_keys=True) + "\n")
    logger.info("calibrated int8 outliers of %d layers (%d features)", len(layers),
                sum(len(v) for v in layers.values()))
    return path
