"""Read selected tensors from a model directory's safetensors files.

Only the requested keys are read (safetensors maps the file and copies just
those tensors), so a node serving a few blocks pays memory for those blocks.
Both a single ``model.safetensors`` and a sharded checkpoint with
``model.safetensors.index.json`` are understood.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors import safe_open

from proto.errors import ModelError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def _key_files(model_dir: Path) -> dict[str, Path]:
    model_dir = Path(model_dir)
    if (model_dir / INDEX).is_file():
        idx = json.loads((model_dir / INDEX).read_text())["weight_map"]
        return {k: model_dir / f for k, f in idx.items()}
    if (model_dir / SINGLE).is_file():
        with safe_open(model_dir / SINGLE, framework="pt") as f:
            return {k: model_dir / SINGLE for k in f.keys()}
    raise ModelError(f"{model_dir} has no {SINGLE} or {INDEX}; import the model with "
                     "`tessera model import DIR` so its weights are converted to safetensors")


def checkpoint_keys(model_dir: Path) -> list[str]:
    """All tensor names in the checkpoint."""
    return sorted(_key_files(model_dir))


def tensor_numels(model_dir: Path, keys: Iterable[str]) -> dict[str, int]:
    """``{key: number of values}`` for ``keys``, from the files' headers (no tensor is read)."""
    files, out = _key_files(model_dir), {}
    by_file: dict[Path, list[str]] = {}
    for k in keys:
        if k not in files:
            raise ModelError(f"checkpoint in {model_dir} lacks {k}; re-import the model")
        by_file.setdefault(files[k], []).append(k)
    for path, ks in by_file.items():
        with safe_open(path, framework="pt") as f:
            out.update({k: math.prod(f.get_slice(k).get_shape()) for k in ks})
    return out


def iter_tensors(model_dir: Path, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(key, tensor)`` for ``keys`` in the given order, on CPU, as stored."""
    files = _key_files(model_dir)
    keys = list(keys)
    missing = [k for k in keys if k not in files]
    if missing:
        raise ModelError(f"checkpoint in {model_dir} lacks {missing[:3]}...; re-import the model")
    handles: dict[Path, object] = {}
    try:
        for k in keys:
            path = files[k]
            if path not in handles:
                handles[path] = safe_open(path, framework="pt").__enter__()
            yield k, handles[path].get_tensor(k)
    finally:
        for h in handles.values():
            h.__exit__(None, None, None)


def read_tensors(model_dir: Path, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """``{key: tensor}`` for ``keys`` (CPU, stored dtype)."""
    return dict(iter_tensors(model_dir, keys))
