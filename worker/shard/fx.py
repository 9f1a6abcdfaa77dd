"""Generic sharding of any PyTorch model with torch.fx.

A stored fx model's ``config.json`` names its architecture and the factory that builds it::

    {"tessera_arch": "digits-cnn", "tessera_builder": "worker.vision.models:DigitsCNN",
     "arch_kwargs": {...}, "tessera_blocks": "blocks"}

``tessera_blocks`` is the ``nn.ModuleList``/``nn.Sequential`` attribute whose
children are the model's blocks (default: the child container with the most
children; ``""`` for a top-level ``nn.Sequential``). The model is traced with
each block as a leaf, so the graph reads ``input ops -> block 0 -> glue ->
block 1 -> ... -> block N-1 -> output ops``. The model is cut just before each
block and just after the last one; every cut must be crossed by exactly one
tensor (a single-tensor boundary), otherwise loading fails with a clear error.
Glue between block i and block i+1 belongs to block i.

The factory is imported from ``tessera_builder`` when the model loads, so this
module imports no model; :func:`register_architecture` registers one in this
process instead (tests).
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import fx, nn

from proto.errors import ModelError
from worker.shard.layout import Entry, StageLayout
from worker.shard.weights import read_tensors
from worker.stage import StageSpec

logger = logging.getLogger(__name__)

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable:
    """Decorator: make ``factory(**arch_kwargs) -> nn.Module`` loadable as ``tessera_arch = name``."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ARCHITECTURES[name] = factory
        return factory

    return deco


def build_module(config: dict) -> nn.Module:
    """Instantiate the model ``config`` describes (weights uninitialised if under meta).

    The factory is ``config["tessera_builder"]`` ("package.module:callable", imported here), or
    an architecture registered in this process under ``config["tessera_arch"]``.
    """
    factory = _factory(config)
    return factory(**config.get("arch_kwargs", {}))


def _factory(config: dict) -> Callable[..., nn.Module]:
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
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot load the model factory {builder!r}: {exc}") from exc


def block_prefix(model: nn.Module, config: dict) -> str:
    if "tessera_blocks" in config:
        return config["tessera_blocks"]
    if isinstance(model, nn.Sequential):
        return ""
    conts = [(len(m), n) for n, m in model.named_children() if isinstance(m, (nn.ModuleList, nn.Sequential))]
    if not conts:
        raise ModelError("model has no nn.ModuleList/nn.Sequential of blocks; set tessera_blocks in config.json")
    return max(conts)[1]


class _BlockTracer(fx.Tracer):
    def __init__(self, prefix: str):
        super().__init__()
        self.pattern = re.compile((re.escape(prefix) + r"\.\d+") if prefix else r"\d+")

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return bool(self.pattern.fullmatch(qualname)) or super().is_leaf_module(m, qualname)


@dataclass(frozen=True)
class Cuts:
    """The traced model and where it is cut: stage s runs ``nodes[bounds[s]:bounds[s+1]]``."""

    gm: fx.GraphModule
    prefix: str
    nodes: tuple[fx.Node, ...]  # every node except placeholder and output, in order
    bounds: tuple[int, ...]  # 0, c_0, ..., c_N, len(nodes): stage 0 = input, N+1 = output
    crossing: tuple[fx.Node, ...]  # the single tensor crossing each cut c_0..c_N

    @property
    def num_blocks(self) -> int:
        return len(self.crossing) - 1


def cut(model: nn.Module, config: dict) -> Cuts:
    """Trace ``model`` with blocks as leaves and find its single-tensor cuts."""
    prefix = block_prefix(model, config)
    tracer = _BlockTracer(prefix)
    graph = tracer.trace(model)
    gm = fx.GraphModule(model, graph)
    all_nodes = list(graph.nodes)
    ph = [n for n in all_nodes if n.op == "placeholder"]
    if len(ph) != 1:
        raise ModelError(f"fx models must take exactly one input tensor, this one takes {len(ph)}")
    nodes = [n for n in all_nodes if n.op not in ("placeholder", "output")]
    dot = f"{prefix}." if prefix else ""
    pos = []
    for i in range(len(nodes)):
        targets = [j for j, n in enumerate(nodes) if n.op == "call_module" and n.target == f"{dot}{i}"]
        if not targets:
            break
        if len(targets) > 1 or (pos and targets[0] < pos[-1]):
            raise ModelError(f"block {dot}{i} is called more than once or out of order; it cannot be sharded")
        pos.append(targets[0])
    if not pos:
        raise ModelError(f"no blocks named {dot}0, {dot}1, ... were found in the traced model")
    cuts = [*pos, pos[-1] + 1]
    order = {n: j for j, n in enumerate(nodes)}
    order[ph[0]] = -1
    crossing = []
    for c in cuts:
        live = {n for n in [ph[0], *nodes[:c]] if any(u.op == "output" or order[u] >= c for u in n.users)}
        if len(live) != 1:
            raise ModelError(f"model cannot be cut at node {c} ({nodes[c].name if c < len(nodes) else 'end'}): "
                             f"{len(live)} tensors cross it ({sorted(n.name for n in live)}); "
                             "cuts must be single-tensor boundaries")
        crossing.append(live.pop())
    return Cuts(gm, prefix, tuple(nodes), (0, *cuts, len(nodes)), tuple(crossing))


def sub_module(cuts: Cuts, start: int, end: int) -> fx.GraphModule:
    """A GraphModule running blocks ``[start, end)`` (+ input/output stages at the ends)."""
    n = cuts.num_blocks
    lo = cuts.bounds[0] if start == 0 else cuts.bounds[start + 1]
    hi = cuts.bounds[-1] if end == n else cuts.bounds[end + 1]
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    src_in = next(x for x in cuts.gm.graph.nodes if x.op == "placeholder") if start == 0 else cuts.crossing[start]
    env[src_in] = g.placeholder("x")
    for node in cuts.nodes[lo:hi]:
        env[node] = g.node_copy(node, lambda a: env[a])
    if end == n:
        out = next(x for x in cuts.gm.graph.nodes if x.op == "output").args[0]
        g.output(fx.node.map_arg(out, lambda a: env[a]))
    else:
        g.output(env[cuts.crossing[end]])
    return fx.GraphModule(cuts.gm, g)


def fx_layout(config: dict, keys: list[str]) -> StageLayout:
    """Stage layout of an fx model: which checkpoint tensors each stage uses."""
    with torch.device("meta"):
        model = build_module(config)
    cuts = cut(model, config)
    n = cuts.num_blocks
    dot = f"{cuts.prefix}." if cuts.prefix else ""

    def entries(s: int, e: int, strip: str = "") -> tuple[Entry, ...]:
        names = sorted(sub_part(cuts, s, e).state_dict())
        return tuple((k[len(strip):] if strip and k.startswith(strip) else k, k) for k in names)

    inp = entries(-1, 0)
    blocks = tuple(entries(i, i + 1, f"{dot}{i}.") for i in range(n))
    outp = entries(n, n + 1)
    missing = sorted({k for part in (inp, *blocks, outp) for _, k in part} - set(keys))
    if missing:
        raise ModelError(f"checkpoint lacks {missing[:4]}; it does not fit architecture {config['tessera_arch']}")
    return StageLayout("fx", config["tessera_arch"], inp, blocks, outp)


def sub_part(cuts: Cuts, s: int, e: int) -> fx.GraphModule:
    """Nodes of stage parts ``[s, e)`` where -1 is the input stage and N the output stage."""
    g = fx.Graph()
    env: dict[fx.Node, Any] = {}
    nodes = cuts.nodes[cuts.bounds[s + 1]:cuts.bounds[e + 1]]

    def arg(a: fx.Node) -> fx.Node:
        if a not in env:
            env[a] = g.placeholder(a.name)
        return env[a]

    for node in nodes:
        env[node] = g.node_copy(node, arg)
    g.output(None)
    return fx.GraphModule(cuts.gm, g)


class FxStage(nn.Module):
    """A span of an fx-cut model; stateless, implements :class:`worker.stage.Stage`."""

    def __init__(self, spec: StageSpec, gm: fx.GraphModule, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.spec, self.gm, self.device, self.dtype = spec, gm, device, dtype

    def new_cache(self) -> None:
        return None

    def cache_len(self, cache: Any | None) -> int:
        return 0

    def cache_bytes(self, cache: Any | None) -> int:
        return 0

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, cache: Any | None = None, *, last: bool = False) -> torch.Tensor:
        """Raw input (head) or the previous stage's tensor in; next tensor or logits ``(B, K)`` out.
        ``last`` is ignored: these models have no positions."""
        x = x.to(self.device)
        return self.gm(x.to(self.dtype) if x.is_floating_point() else x)


def _materialise(module: nn.Module, model_dir: Path, device: torch.device, dtype: torch.dtype) -> None:
    """Fill a meta-built module with its tensors from disk (only the ones it holds)."""
    if any(getattr(m, "_non_persistent_buffers_set", None) for m in module.modules()):
        raise ModelError("fx models with non-persistent buffers are not supported; make the buffers persistent")
    keys = list(module.state_dict())
    module.to_empty(device=device)
    module.to(dtype)
    res = module.load_state_dict(read_tensors(model_dir, keys), strict=True)
    del res


def build_fx_stage(model_dir: Path, config: dict, spec: StageSpec, device: torch.device,
                   dtype: torch.dtype) -> FxStage:
    with torch.device("meta"):
        model = build_module(config)
    gm = sub_module(cut(model, config), spec.start, spec.end)
    _materialise(gm, model_dir, device, dtype)
    logger.info("loaded %s blocks [%d, %d) on %s", spec.model, spec.start, spec.end, device)
    return FxStage(spec, gm.eval(), device, dtype).eval()


def build_fx_full(model_dir: Path, config: dict, device: torch.device, dtype: torch.dtype) -> nn.Module:
    with torch.device("meta"):
        model = build_module(config)
    _materialise(model, model_dir, device, dtype)
    return model.eval()
