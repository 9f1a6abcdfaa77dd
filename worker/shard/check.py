"""Proof, on the real weights, that a causal LM's stages reproduce the unsplit model.

:func:`check_split` runs when a causal LM is stored: the unsplit model
prefills a few fixed tokens and decodes a few more with its KV cache, then the
same inputs go through 2 and 3 stages, each with its own session cache, one
stage in memory at a time. Logits must agree to fp32 round-off, or the import
is refused with the cut and the size of the error: a family that shards
wrongly is never stored, so it can never be silently wrong on a node.
"""

from __future__ import annotations

import gc
import itertools
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import DynamicCache

from proto.errors import ModelError
from worker.shard import load_full, load_stage, stage_layout
from worker.stage import Stage

logger = logging.getLogger(__name__)

PROMPT_TOKENS = 6  # prefilled at once, count
DECODE_STEPS = 3  # cached one-token steps after the prompt, count
TOLERANCE = 1e-4  # largest logit error allowed, relative to the largest |logit| (fp32 round-off is ~1e-7)

StageLoader = Callable[[Path, int, int], Stage]


def even_spans(num_blocks: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous half-open spans covering ``[0, num_blocks)`` as evenly as possible."""
    cuts = [round(i * num_blocks / parts) for i in range(parts + 1)]
    return list(itertools.pairwise(cuts))


@torch.inference_mode()
def reference(model_dir: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The inputs of each step (prompt, then greedy tokens) and the unsplit model's logits for them."""
    full = load_full(model_dir)
    vocab = full.get_output_embeddings().weight.shape[0]
    x = torch.randint(0, vocab, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache(config=full.config)
    inputs, logits = [], []
    for _ in range(1 + DECODE_STEPS):
        out = full(x, past_key_values=cache, use_cache=True).logits
        inputs.append(x)
        logits.append(out)
        x = out[:, -1:].argmax(-1)
    return inputs, logits


@torch.inference_mode()
def staged(model_dir: Path, spans: list[tuple[int, int]], inputs: list[torch.Tensor],
           load: StageLoader = load_stage) -> list[torch.Tensor]:
    """The same steps through stages ``spans``, each with its session cache, one stage loaded at a time."""
    outs = inputs
    for start, end in spans:
        stage = load(model_dir, start, end)
        cache = stage.new_cache()
        outs = [stage(x, cache) for x in outs]
        del stage, cache
        gc.collect()
    return outs


def split_error(want: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    """Largest logit difference over all steps, relative to the largest |logit| (at least 1)."""
    scale = max(1.0, max(float(w.abs().max()) for w in want))
    return max(float((g - w).abs().max()) for g, w in zip(got, want)) / scale


def check_split(model_dir: Path | str, load: StageLoader = load_stage) -> dict[int, float]:
    """Relative logit error at 2 and 3 stages; ModelError when either exceeds :data:`TOLERANCE`."""
    model_dir = Path(model_dir)
    n = stage_layout(model_dir).num_blocks
    inputs, want = reference(model_dir)
    gc.collect()
    errors = {}
    for parts in (2, 3):
        if parts > n:
            continue
        spans = even_spans(n, parts)
        errors[parts] = err = split_error(want, staged(model_dir, spans, inputs, load))
        if not err <= TOLERANCE:
            raise ModelError(f"{model_dir.name} cannot be split exactly: through {parts} stages {spans} its logits "
                             f"differ from the unsplit model's by {err:.3g} of their scale (allowed {TOLERANCE:g}); "
                             "this architecture is not supported for sharding")
    logger.info("%s splits exactly (relative logit error %s)", model_dir.name,
                ", ".join(f"{k} stages: {v:.1e}" for k, v in errors.items()))
    return errors
