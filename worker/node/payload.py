"""Job inputs and outputs per model kind.

* causal-lm: input = the prompt as UTF-8 bytes, tokenized by the head with the
  model's own tokenizer (its hash is on chain); output = generated token ids.
* classifier: input = images as ``worker.vision.encode_images`` bytes (64
  pixel values 0..16 per 8x8 digit); output = one class id per image.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from proto.errors import JobError, JobInputError
from proto.types import decode_output
from worker.limits import ModelLimits
from worker.vision.data import decode_images


@functools.lru_cache(maxsize=8)
def tokenizer(model_dir: str):
    return AutoTokenizer.from_pretrained(model_dir)


def eos_token_id(model_dir: str | Path) -> int | None:
    """The end-of-sequence id every replica stops at (from config.json)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    eos = cfg.get("eos_token_id")
    return eos[0] if isinstance(eos, list) else eos


def encode_prompt(prompt: str) -> bytes:
    if not prompt:
        raise JobError("the prompt is empty; pass --prompt TEXT")
    return prompt.encode("utf-8")


def head_inputs(kind: str, model_dir: str | Path, data: bytes, max_tokens: int = 0) -> "list[int] | torch.Tensor":
    """What the head stage feeds in: prompt token ids, or the image tensor. Raises
    :class:`JobInputError` for input that can never run on this model."""
    if kind == "classifier":
        return decode_images(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobInputError(f"job input is not UTF-8 text ({exc}); a language model takes a prompt") from exc
    if not any(c.isprintable() and not c.isspace() for c in text):
        raise JobInputError("job input holds no printable text (images are bytes 0..16); a language model takes "
                            "a prompt")
    ids = tokenizer(str(model_dir))(text)["input_ids"]
    if not ids:
        raise JobInputError("the prompt is empty; a language model needs at least one token")
    limit = ModelLimits.of(model_dir).context
    if limit is not None and len(ids) + max_tokens > limit:
        raise JobInputError(f"the prompt has {len(ids)} tokens and the job asks for {max_tokens} more; the model "
                            f"attends over at most {limit}")
    return ids


def describe_output(kind: str, model_dir: str | Path | None, output: bytes) -> str:
    """Human-readable output: decoded text, or the class ids."""
    ids = decode_output(output)
    if kind == "classifier" or model_dir is None:
        return " ".join(map(str, ids))
    return tokenizer(str(model_dir)).decode(ids, skip_special_tokens=True)
