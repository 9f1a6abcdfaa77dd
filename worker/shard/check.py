"""Proof, on the real weights, that a model's stages reproduce the unsplit model.

:func:`check_split` runs when a causal LM is stored: the unsplit model
prefills a few fixed tokens and decodes a few more with its KV cache, then the
same inputs go through 2 and 3 stages, each with its own session cache, one
stage in memory at a time. Logits must agree to fp32 round-off, or the import
is refused with the cut and the size of the error: a family that shards
wrongly is never stored, so it can never be silently wrong on a node.
:func:`check_fx_split` does the same for an fx model on a seeded input of the
shape its config states, and also refuses one whose cuts are crossed by
something other than tensors or whose output is not ``(batch, classes)`` logits.
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
from worker.shard.layout import read_config
from worker.shard.program import input_spec
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


ENCODER_TOKENS = 12  # token ids of the encoder check's text, count


def check_encoder_split(model_dir: Path | str, load: StageLoader = load_stage) -> dict[int, float]:
    """Relative embedding error of an encoder at 2 and 3 stages on seeded token ids; ModelError when
    either exceeds :data:`TOLERANCE`."""
    model_dir = Path(model_dir)
    n = stage_layout(model_dir).num_blocks
    vocab = int(read_config(model_dir)["vocab_size"])
    ids = torch.randint(0, vocab, (1, ENCODER_TOKENS), generator=torch.Generator().manual_seed(0))
    want = load_full(model_dir)(ids)
    errors = {}
    for parts in (2, 3):
        if parts > n:
            continue
        spans = even_spans(n, parts)
        errors[parts] = err = split_error([want], staged(model_dir, spans, [ids], load))
        if not err <= TOLERANCE:
            raise ModelError(f"{model_dir.name} cannot be split exactly: through {parts} stages {spans} its "
                             f"embedding differs from the unsplit model's by {err:.3g} (allowed {TOLERANCE:g}); "
                             "this encoder is not supported for sharding")
    return errors


def example_input(model_dir: Path) -> torch.Tensor:
    """A seeded input of the shape and dtype ``tessera_input`` states (ModelError if it states none)."""
    spec = input_spec(read_config(model_dir))
    if spec is None:
        raise ModelError(f"{model_dir.name}/config.json states no tessera_input (the input tensor's shape and dtype); "
                         "import the model with --input-shape")
    shape, dtype = spec
    g = torch.Generator().manual_seed(0)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(0, 2, shape, generator=g).to(dtype)


def check_fx_split(model_dir: Path | str, load: StageLoader = load_stage) -> dict[int, float]:
    """Relative logit error of an fx model at 2 and 3 stages; ModelError when a split does not run,
    exceeds :data:`TOLERANCE`, or the model's output is not classifier logits."""
    model_dir = Path(model_dir)
    n = stage_layout(model_dir).num_blocks
    x = example_input(model_dir)
    with torch.inference_mode():
        want = load_full(model_dir)(x)
    if not isinstance(want, torch.Tensor) or want.dim() != 2 or not want.is_floating_point():
        got = tuple(want.shape) if isinstance(want, torch.Tensor) else type(want).__name__
        raise ModelError(f"{model_dir.name} returns {got}; a classifier's jobs take the argmax of (batch, classes) "
                         "logits")
    errors = {}
    for parts in (2, 3):
        if parts > n:
            continue
        spans = even_spans(n, parts)
        try:
            (got,) = staged(model_dir, spans, [x], load)
        except ModelError:
            raise
        except Exception as exc:  # e.g. a size computed from a tensor crosses a cut and the next stage gets an int
            raise ModelError(f"{model_dir.name} does not run when cut into {parts} stages {spans} "
                             f"({type(exc).__name__}: {exc}); only tensors may cross a cut between blocks") from exc
        errors[parts] = err = split_error([want], [got])
        if not err <= TOLERANCE:
            raise ModelError(f"{model_dir.name} cannot be split exactly: through {parts} stages {spans} its logits "
                             f"differ from the unsplit model's by {err:.3g} of their scale (allowed {TOLERANCE:g})")
    logger.info("%s splits exactly (relative logit error %s)", model_dir.name,
                ", ".join(f"{k} stages: {v:.1e}" for k, v in errors.items()))
    return errors
