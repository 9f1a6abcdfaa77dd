"""Where an fx model's graph comes from: a Python factory traced by torch.fx, or a torch.export program.

``config.json`` of a stored fx model names one of::

    {"tessera_arch": "my-net", "tessera_builder": "package.module:factory", "arch_kwargs": {...}}
    {"tessera_arch": "my-net", "tessera_program": "program.pt2", "tessera_program_hash": "0x..."}

and may name ``tessera_blocks`` (the container of the blocks; default: found
from the model) and ``tessera_input`` (``{"shape": [...], "dtype": "float32"}``,
the one input tensor a job feeds the head). A factory's model is built on the
meta device and traced with every block as a leaf; a program is loaded with
``torch.export.load`` after its bytes are checked against the hash in the
config (the config's hash is in the manifest, so the program is committed to as
well as the weights), and its blocks are read from each node's
``nn_module_stack``. Either way the result is an ``fx.GraphModule`` and a
function naming the block each node belongs to; :mod:`worker.shard.fx` cuts it.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from eth_hash.auto import keccak
from torch import fx, nn

from proto.errors import ModelError

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64}


def register_architecture(name: str) -> Callable:
    """Decorator: make ``factory(**arch_kwargs) -> nn.Module`` loadable as ``tessera_arch = name``."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES[name] = factory
        return factory

    return deco


@dataclass(frozen=True)
class Traced:
    """An fx model's graph and how its nodes map to blocks."""

    gm: fx.GraphModule
    prefix: str  # the blocks' container, e.g. "blocks" ("" for a top-level nn.Sequential)
    block_of: Callable[[fx.Node], int | None]  # the block a compute node belongs to, None for glue
    meta: bool  # weights are on the meta device (a factory's model) rather than loaded (a program)


def factory_of(config: dict) -> Callable[..., nn.Module]:
    """The factory ``tessera_builder`` names ("package.module:callable"), or one registered in this process."""
    builder = config.get("tessera_builder")
    if builder is None:
        arch = config["tessera_arch"]
        if arch not in ARCHITECTURES:
            raise ModelError(f"config.json names no tessera_builder (\"module:factory\") and architecture {arch!r} "
                             "is not registered in this process")
        return ARCHITECTURES[arch]
    mod_name, _, attr = str(builder).partition(":")
    if not mod_name or not attr:
        raise ModelError(f"tessera_builder {builder!r} is not of the form \"package.module:factory\"")
    try:
        obj = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot load the model factory {builder!r}: {exc}") from exc
    return obj


def build_module(config: dict) -> nn.Module:
    """Instantiate the model a factory config describes (weights uninitialised if under meta)."""
    try:
        return factory_of(config)(**config.get("arch_kwargs", {}))
    except ModelError:
        raise
    except Exception as exc:  # a user's factory can fail in any way
        raise ModelError(f"the model factory {config.get('tessera_builder') or config['tessera_arch']!r} failed "
                         f"with arch_kwargs {config.get('arch_kwargs', {})}: {type(exc).__name__}: {exc}") from exc


def program_hash(path: Path) -> str:
    return "0x" + keccak(Path(path).read_bytes()).hex()


def load_program(model_dir: Path, config: dict) -> torch.export.ExportedProgram:
    """The stored torch.export program, after its bytes are checked against ``tessera_program_hash``."""
    path = Path(model_dir) / config["tessera_program"]
    if not path.is_file():
        raise ModelError(f"{model_dir} lacks the program file {config['tessera_program']}; import the model again")
    if program_hash(path) != config.get("tessera_program_hash"):
        raise ModelError(f"{path.name} does not match tessera_program_hash in config.json; the program was modified: "
                         "import the model again")
    try:
        return torch.export.load(path)
    except Exception as exc:  # a corrupt or foreign file fails inside torch's deserialiser in many ways
        raise ModelError(f"torch.export cannot load {path.name}: {type(exc).__name__}: {exc}") from exc


def trace(model_dir: Path, config: dict) -> Traced:
    """The graph of the fx model stored in ``model_dir`` (see the module docstring)."""
    if "tessera_program" in config:
        return _from_program(load_program(model_dir, config), config)
    with torch.device("meta"):
        model = build_module(config)
    return _from_factory(model, config)


def _from_factory(model: nn.Module, config: dict) -> Traced:
    prefix = config.get("tessera_blocks")
    if prefix is None:
        conts = [(len(m), n) for n, m in model.named_children() if isinstance(m, (nn.ModuleList, nn.Sequential))]
        if isinstance(model, nn.Sequential):
            prefix = ""
        elif not conts:
            raise ModelError("model has no nn.ModuleList/nn.Sequential of blocks; set tessera_blocks in config.json")
        else:
            prefix = max(conts)[1]
    pattern = re.compile((re.escape(prefix) + r"\.(\d+)") if prefix else r"(\d+)")

    class BlockTracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return bool(pattern.fullmatch(qualname)) or super().is_leaf_module(m, qualname)

    try:
        graph = BlockTracer().trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError... for code it cannot follow
        raise ModelError(f"torch.fx cannot trace {type(model).__name__}.forward ({type(exc).__name__}: {exc}); a "
                         "model whose control flow depends on tensor values (an `if` or loop over a tensor) cannot "
                         "be cut into blocks: make that control flow static, or export the model with "
                         "torch.export and import the .pt2 file") from exc

    def block_of(node: fx.Node) -> int | None:
        m = pattern.fullmatch(str(node.target)) if node.op == "call_module" else None
        return int(m.group(1)) if m else None

    return Traced(fx.GraphModule(model, graph), prefix, block_of, meta=True)


def _paths(node: fx.Node) -> list[str]:
    return [str(v[0]) for v in (node.meta.get("nn_module_stack") or {}).values()]


def _from_program(ep: torch.export.ExportedProgram, config: dict) -> Traced:
    gm = ep.module()
    prefix = config.get("tessera_blocks")
    if prefix is None:
        found: Counter[str] = Counter()
        for p in {p for n in gm.graph.nodes for p in _paths(n)}:
            m = re.fullmatch(r"(?:(.*)\.)?(\d+)", p)
            if m:
                found[m.group(1) or ""] += 1
        if not found:
            raise ModelError("the exported program records no numbered submodules (nn_module_stack); set "
                             "tessera_blocks or export a model whose blocks sit in an nn.ModuleList")
        prefix = max(found.items(), key=lambda kv: (kv[1], -len(kv[0])))[0]
    pattern = re.compile((re.escape(prefix) + r"\.(\d+)") if prefix else r"(\d+)")

    def block_of(node: fx.Node) -> int | None:
        for p in _paths(node):
            m = pattern.fullmatch(p)
            if m:
                return int(m.group(1))
        return None

    return Traced(gm, prefix, block_of, meta=False)


def input_spec(config: dict) -> tuple[tuple[int, ...], torch.dtype] | None:
    """Shape and dtype of the one input tensor of a job, when the config states it."""
    spec = config.get("tessera_input")
    if spec is None:
        return ((1, 1, 8, 8), torch.float32) if config.get("input") == "digits-8x8-uint8" else None
    try:
        shape = tuple(int(s) for s in spec["shape"])
        dtype = DTYPES[spec.get("dtype", "float32")]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"tessera_input {spec!r} in config.json is not {{\"shape\": [...], \"dtype\": one of "
                         f"{sorted(DTYPES)}}}") from exc
    if not shape or any(s <= 0 for s in shape):
        raise ModelError(f"tessera_input shape {list(shape)} must have positive dimensions")
    return shape, dtype
