"""Job inputs and outputs per model kind.

* causal-lm: input = the prompt as UTF-8 bytes, tokenized by the head with the
  model's own tokenizer (its hash is on chain); output = generated token ids.
* embedding: input = one text as UTF-8 bytes, tokenized by the head (cut at the
  model's ``max_tokens``); output = the embedding's grid words
  (:func:`proto.types.embedding_words`).
* classifier: input = images as ``worker.vision.encode_images`` bytes (64
  pixel values 0..16 per 8x8 digit) for the digits models; for a user model,
  its one input tensor (``tessera_input`` in its config) as raw little-endian
  bytes in C order (:func:`encode_tensor`); output = one class id per row.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch
from transformers import AutoTokenizer

from proto.errors import JobError, JobInputError, ModelError
from proto.types import EMBEDDING_GRID, decode_output, embedding_values
from worker.limits import ModelLimits
from worker.shard.program import input_spec
from worker.vision.data import decode_images


@functools.lru_cache(maxsize=8)
def tokenizer(model_dir: str):
    return AutoTokenizer.from_pretrained(model_dir)


def eos_token_ids(model_dir: str | Path) -> tuple[int, ...]:
    """The end-of-sequence ids every replica stops at: ``generation_config.json``'s, else ``config.json``'s
    (as transformers' ``generate`` reads them; all of them, as it stops at any). Both files are covered
    by the model's config hash on chain, which the node checks at start-up."""
    for name in ("generation_config.json", "config.json"):
        path = Path(model_dir) / name
        if path.is_file():
            eos = json.loads(path.read_text()).get("eos_token_id")
            if eos is not None:
                return tuple(int(t) for t in (eos if isinstance(eos, list) else [eos]))
    return ()


def chat_prompt(model_dir: str | Path, messages: list[dict]) -> str:
    """The prompt text the model's own chat template makes of ``messages`` (``{"role", "content"}``
    dicts), ending where the assistant's answer begins: what the gateway and ``job submit --chat`` send."""
    tok = tokenizer(str(model_dir))
    if not tok.chat_template:
        raise ModelError(f"model {Path(model_dir).name!r} has no chat template in its tokenizer; send a plain "
                         "prompt instead")
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(prompt: str) -> bytes:
    if not prompt:
        raise JobError("the prompt is empty; pass --prompt TEXT")
    return prompt.encode("utf-8")


def encode_tensor(x: torch.Tensor) -> bytes:
    """A user model's job input: the tensor's raw little-endian bytes in C order."""
    return x.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def decode_tensor(data: bytes, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`encode_tensor` for a model that takes ``shape`` in ``dtype``."""
    want = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if len(data) != want:
        raise JobInputError(f"job input has {len(data)} bytes; this model takes one {dtype} tensor of shape "
                            f"{list(shape)}, {want} bytes little-endian")
    x = torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise JobInputError("job input holds NaN or Inf values")
    return x


def head_inputs(kind: str, model_dir: str | Path, data: bytes, max_tokens: int = 0) -> "list[int] | torch.Tensor":
    """What the head stage feeds in: prompt token ids, or the input tensor. Raises
    :class:`JobInputError` for input that can never run on this model."""
    if kind == "classifier":
        path = Path(model_dir) / "config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        if "tessera_input" not in config:
            return decode_images(data)  # the digits models
        return decode_tensor(data, *input_spec(config))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobInputError(f"job input is not UTF-8 text ({exc}); a language model takes a prompt") from exc
    if not any(c.isprintable() and not c.isspace() for c in text):
        raise JobInputError("job input holds no printable text (images are bytes 0..16); a language model takes "
                            "a prompt")
    if kind == "embedding":  # cut at the model's limit, as sentence-transformers does
        settings = json.loads((Path(model_dir) / "config.json").read_text())["tessera_embedding"]
        return tokenizer(str(model_dir))(text, truncation=True, max_length=settings["max_tokens"])["input_ids"]
    ids = tokenizer(str(model_dir))(text)["input_ids"]
    if not ids:
        raise JobInputError("the prompt is empty; a language model needs at least one token")
    limit = ModelLimits.of(model_dir).context
    if limit is not None and len(ids) + max_tokens > limit:
        raise JobInputError(f"the prompt has {len(ids)} tokens and the job asks for {max_tokens} more; the model "
                            f"attends over at most {limit}")
    return ids


def describe_output(kind: str, model_dir: str | Path | None, output: bytes) -> str:
    """Human-readable output: decoded text, the class ids, or an embedding's first values."""
    ids = decode_output(output)
    if kind == "embedding":
        values = embedding_values(ids)
        head = ", ".join(f"{v:+.4f}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
        return f"embedding of {len(values)} values on a 1/{EMBEDDING_GRID} grid: [{head}]"
    if kind == "classifier" or model_dir is None:
        return " ".join(map(str, ids))
    return tokenizer(str(model_dir)).decode(ids, skip_special_tokens=True)
