"""Generic sharding of any PyTorch model from its fx graph.

The graph comes from :mod:`worker.shard.program`: a factory's model traced by
torch.fx with each block as a leaf, or a torch.export program whose nodes name
the block they came from. Either reads ``input ops -> block 0 -> glue -> block 1
-> ... -> block N-1 -> output ops``; glue between block i and block i+1 belongs
to block i. The model is cut just before each block and just after the last.

Every tensor that crosses a cut travels to the next stage: the one produced
last is the *primary* activation (the hop's payload), the others, in the order
they were produced, are *extras* (``HopMessage.extras``), e.g. the input of a
residual connection that skips over a cut. A stage therefore takes and returns
either one tensor or a tuple ``(primary, *extras)``. Parameters and buffers
never cross a cut: each stage reads those it uses itself. Only tensors may
cross (a shape or an int computed from a tensor cannot), which the import check
finds by running the stages (:func:`worker.shard.check.check_fx_split`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from proto.errors import ModelError
from worker.shard.layout import Entry, StageLayout
from worker.shard.program import ARCHITECTURES, Traced, build_module, register_architecture, trace
from worker.shard.weights import read_tensors
from worker.stage import Activation, StageSpec, Stateless, tensors

logger = logging.getLogger(__name__)

__all__ = ["ARCHITECTURES", "register_architecture", "build_module", "Cuts", "cut", "sub_module", "fx_layout",
           "FxStage", "build_fx_stage", "build_fx_full"]

SKIP = ("placeholder", "output", "get_attr")  # nodes that are not computation


@dataclass(frozen=True)
class Cuts:
    """The traced model and where it is cut: stage s runs ``nodes[bounds[s]:bounds[s+1]]``."""

    gm: fx.GraphModule
    prefix: str
    nodes: tuple[fx.Node, ...]  # every compute node, in order
    bounds: tuple[int, ...]  # 0, c_0, ..., c_N, len(nodes): stage 0 = input, N+1 = output
    crossing: tuple[tuple[fx.Node, ...], ...]  # the tensors crossing each cut c_0..c_N, primary first

    @property
    def num_blocks(self) -> int:
        return len(self.crossing) - 1


def cut(traced: Traced) -> Cuts:
    """Find the blocks of ``traced`` and the tensors crossing each cut."""
    graph = traced.gm.graph
    ph = [n for n in graph.nodes if n.op == "placeholder"]
    if len(ph) != 1:
        raise ModelError(f"fx models must take exactly one input tensor, this one takes {len(ph)}")
    nodes = [n for n in graph.nodes if n.op not in SKIP]
    dot = f"{traced.prefix}." if traced.prefix else ""
    where: dict[int, list[int]] = {}
    for j, node in enumerate(nodes):
        b = traced.block_of(node)
        if b is not None:
            where.setdefault(b, []).append(j)
    n = 0
    while n in where:
        n += 1
    if n == 0:
        raise ModelError(f"no blocks named {dot}0, {dot}1, ... were found in the traced model; set tessera_blocks")
    if set(where) - set(range(n)):
        raise ModelError(f"block {dot}{min(set(where) - set(range(n)))} runs but block {dot}{n} does not; every "
                         "block must compute something")
    for i in range(1, n):
        if min(where[i]) <= max(where[i - 1]):
            raise ModelError(f"block {dot}{i} runs before block {dot}{i - 1} is done (called more than once or out "
                             "of order); it cannot be sharded")
    if traced.meta and any(len(v) > 1 for v in where.values()):
        i = next(i for i, v in where.items() if len(v) > 1)
        raise ModelError(f"block {dot}{i} is called more than once; it cannot be sharded")
    cuts = [min(where[i]) for i in range(n)] + [max(where[n - 1]) + 1]
    order = {node: j for j, node in enumerate(nodes)}
    order[ph[0]] = -1
    crossing = []
    for c in cuts:
        live = sorted((x for x in [ph[0], *nodes[:c]]
                       if any(u.op == "output" or order.get(u, -1) >= c for u in x.users)), key=order.__getitem__)
        if not live:
            raise ModelError(f"nothing crosses the cut before node {c}: the rest of the model does not depend on "
                             "its input")
        crossing.append((live[-1], *live[:-1]))
    return Cuts(traced.gm, traced.prefix, tuple(nodes), (0, *cuts, len(nodes)), tuple(crossing))


def _copier(g: fx.Graph, env: dict[fx.Node, fx.Node], outside):
    """Argument mapping for ``node_copy``: parameters are copied in where used, other values from ``outside``."""

    def arg(a: fx.Node) -> fx.Node:
        if a not in env:
            env[a] = g.node_copy(a) if a.op == "get_attr" else outside(a)
        return env[a]

    return arg


def _model_output(cuts: Cuts):
    out = next(x for x in cuts.gm.graph.nodes if x.op == "output").args[0]
    pytree = type(cuts.gm.graph._codegen).__name__ == "_PyTreeCodeGen"  # an exported program's flat outputs
    if pytree and isinstance(out, (tuple, list)) and len(out) == 1:
        return out[0]
    return out


def sub_module(cuts: Cuts, start: int, end: int) -> fx.GraphModule:
    """A GraphModule running blocks ``[start, end)`` (+ input/output stages at the ends); its inputs and
    outputs are the tensors crossing its cuts, primary first."""
    n = cuts.num_blocks
    lo = cuts.bounds[0] if start == 0 else cuts.bounds[start + 1]
    hi = cuts.bounds[-1] if end == n else cuts.bounds[end + 1]
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    inputs = (next(x for x in cuts.gm.graph.nodes if x.op == "placeholder"),) if start == 0 else cuts.crossing[start]
    for k, src in enumerate(inputs):
        env[src] = g.placeholder("x" if k == 0 else f"extra_{k - 1}")

    def outside(a: fx.Node) -> fx.Node:
        raise ModelError(f"stage [{start}, {end}) uses {a.name}, which does not cross its first cut")

    arg = _copier(g, env, outside)
    for node in cuts.nodes[lo:hi]:
        env[node] = g.node_copy(node, arg)
    if end == n:
        g.output(fx.node.map_arg(_model_output(cuts), arg))
    else:
        outs = cuts.crossing[end]
        g.output(env[outs[0]] if len(outs) == 1 else tuple(env[o] for o in outs))
    return fx.GraphModule(cuts.gm, g)


def sub_part(cuts: Cuts, s: int, e: int) -> fx.GraphModule:
    """Nodes of stage parts ``[s, e)`` where -1 is the input stage and N the output stage."""
    g = fx.Graph()
    env: dict[fx.Node, Any] = {}
    arg = _copier(g, env, lambda a: g.placeholder(a.name))
    for node in cuts.nodes[cuts.bounds[s + 1]:cuts.bounds[e + 1]]:
        env[node] = g.node_copy(node, arg)
    g.output(None)
    return fx.GraphModule(cuts.gm, g)


def fx_layout(model_dir: Path, config: dict, keys: list[str]) -> StageLayout:
    """Stage layout of an fx model: which checkpoint tensors each stage uses."""
    cuts = cut(trace(model_dir, config))
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


class FxStage(Stateless, nn.Module):
    """A span of an fx-cut model; stateless, implements :class:`worker.stage.Stage`."""

    def __init__(self, spec: StageSpec, gm: fx.GraphModule, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.spec, self.gm, self.device, self.dtype = spec, gm, device, dtype

    @torch.inference_mode()
    def forward(self, x: Activation, cache: Any | None = None, *, last: bool = False) -> Activation:
        """Raw input (head) or the tensors crossing the previous cut in; those crossing the next cut, or
        logits ``(B, K)``, out. ``last`` is ignored: these models have no positions."""
        xs = [t.to(self.device, self.dtype) if t.is_floating_point() else t.to(self.device) for t in tensors(x)]
        return self.gm(*xs)


def _materialise(module: nn.Module, model_dir: Path, device: torch.device, dtype: torch.dtype) -> None:
    """Fill a module with its tensors from disk (only the ones it holds), whatever it held before."""
    if any(getattr(m, "_non_persistent_buffers_set", None) for m in module.modules()):
        raise ModelError("fx models with non-persistent buffers are not supported; make the buffers persistent")
    keys = list(module.state_dict())
    module.to_empty(device=device)
    module.to(dtype)
    module.load_state_dict(read_tensors(model_dir, keys), strict=True)


def build_fx_stage(model_dir: Path, config: dict, spec: StageSpec, device: torch.device,
                   dtype: torch.dtype) -> FxStage:
    gm = sub_module(cut(trace(model_dir, config)), spec.start, spec.end)
    _materialise(gm, model_dir, device, dtype)
    logger.info("loaded %s blocks [%d, %d) on %s", spec.model, spec.start, spec.end, device)
    return FxStage(spec, gm.eval(), device, dtype).eval()


def build_fx_full(model_dir: Path, config: dict, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The whole model with the stored weights: the factory's module, or the program's graph module."""
    if "tessera_program" in config:
        model = trace(model_dir, config).gm  # already in the mode it was exported in; eval() is refused on it
        _materialise(model, model_dir, device, dtype)
        return model
    with torch.device("meta"):
        model = build_module(config)
    _materialise(model, model_dir, device, dtype)
    return model.eval()
