"""Storing a user's own PyTorch model: a ``torch.export`` program or a factory plus a weights file.

Both become an fx model directory (:mod:`worker.shard.program`): ``config.json``
naming where the graph comes from, the input tensor a job feeds the head
(``tessera_input``) and the kind (a classifier: its output is ``(batch,
classes)`` logits and a job's output their argmax), plus ``model.safetensors``.
A program's weights are taken out of it into ``model.safetensors`` (what is
hashed per stage and what the stages load) and the program file is kept
beside them, its keccak in the config. A factory must be importable wherever
the model runs (the operators install the package that holds it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from proto.errors import ModelError
from worker.shard.program import DTYPES, load_program, program_hash
from worker.store.install import install
from worker.store.manifest import Manifest

PROGRAM = "program.pt2"


def _input(shape, dtype: str) -> dict:
    shape = [int(s) for s in shape]
    if not shape or any(s <= 0 for s in shape):
        raise ModelError(f"input shape {shape} must have positive dimensions, e.g. 1,3,32,32")
    if dtype not in DTYPES:
        raise ModelError(f"input dtype {dtype!r} is not one of {sorted(DTYPES)}")
    return {"shape": shape, "dtype": dtype}


def _config(name: str, blocks: str | None, spec: dict, **source) -> dict:
    cfg = {"tessera_arch": name, **source, "tessera_kind": "classifier", "tessera_input": spec}
    if blocks is not None:
        cfg["tessera_blocks"] = blocks
    return cfg


def import_program(path: str | Path, name: str | None = None, blocks: str | None = None,
                   force: bool = False) -> Manifest:
    """Store a ``torch.export.save``d program; its example input fixes the job's input shape."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"{path} is not a file; pass the .pt2 file torch.export.save wrote")
    name = name or path.stem.lower()

    def build(out: Path) -> str:
        shutil.copy2(path, out / PROGRAM)
        ep = load_program(out, {"tessera_program": PROGRAM, "tessera_program_hash": program_hash(out / PROGRAM)})
        args, kwargs = ep.example_inputs or ((), {})
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            raise ModelError(f"{path.name} was exported with {len(args)} positional and {len(kwargs)} keyword "
                             "inputs; a model sharded here takes exactly one input tensor")
        x = args[0]
        dtype = next((k for k, v in DTYPES.items() if v == x.dtype), None)
        if dtype is None:
            raise ModelError(f"{path.name} takes a {x.dtype} input; supported: {sorted(DTYPES)}")
        state = ep.module().state_dict()
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, out / "model.safetensors",
                  metadata={"format": "pt"})
        cfg = _config(name, blocks, _input(x.shape, dtype), tessera_program=PROGRAM,
                      tessera_program_hash=program_hash(out / PROGRAM))
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return f"torch.export program {path.name}"

    return install(name, build, force=force)


def import_factory(factory: str, weights: str | Path, name: str, input_shape, input_dtype: str = "float32",
                   kwargs: dict | None = None, blocks: str | None = None, force: bool = False) -> Manifest:
    """Store the model ``factory(**kwargs)`` ("package.module:callable") builds, with ``weights`` (a
    safetensors file of its state dict)."""
    weights = Path(weights).expanduser().resolve()
    if not weights.is_file():
        raise ModelError(f"weights file {weights} does not exist; pass the model's state dict as safetensors")
    try:
        with safe_open(weights, framework="pt"):
            pass
    except Exception as exc:  # not a safetensors file: safetensors raises its own errors
        raise ModelError(f"{weights} is not a safetensors file ({exc}); save the state dict with "
                         "safetensors.torch.save_file") from exc

    def build(out: Path) -> str:
        shutil.copy2(weights, out / "model.safetensors")
        cfg = _config(name, blocks, _input(input_shape, input_dtype), tessera_builder=factory,
                      arch_kwargs=kwargs or {})
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return f"factory {factory} with weights {weights.name}"

    return install(name, build, force=force)
