"""``plan_replicas``: the router's entry point. Pure: a snapshot in, a plan out.

* latency and price modes: exact minimum total objective over ``R``
  node-disjoint replicas (:func:`router.search.search`).
* throughput mode (widest path): the largest ``tau`` such that ``R`` disjoint
  replicas exist in which every hop runs at ``tau`` tokens/s or more (node
  ``i`` serving ``n`` blocks runs at ``throughput_i / n``), found by binary
  search over the finite set of candidate values; among those plans, the
  lowest latency objective.

If fewer than ``R`` disjoint replicas exist, :class:`RoutingError` says how many
do and which blocks are short of nodes.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from router import cost as costmod
from router.advise import block_capacity
from router.search import SearchResult, search
from router.types import Mode, ReplicaCost, RoutedPlan, Snapshot, Weights
from tessera.errors import RoutingError
from tessera.types import Hop, NodeId, Plan, Replica

logger = logging.getLogger(__name__)


def _limits(cm: costmod.CostModel, tau: float) -> np.ndarray:
    """Most blocks each node may serve in one hop and still run at ``tau`` tokens/s."""
    thr = np.array([n.throughput for n in cm.nodes], dtype=float)
    return np.floor(thr / tau * (1 + 1e-12)).astype(np.int64)


def _count_disjoint(cm: costmod.CostModel, upper: int) -> int:
    """How many node-disjoint replicas exist at most (exact, by feasibility search)."""
    for r in range(upper, 0, -1):
        if search(cm, r, first_feasible=True).replicas is not None:
            return r
    return 0


def _shortage(snapshot: Snapshot, cm: costmod.CostModel, replicas: int, upper: int) -> RoutingError:
    have = _count_disjoint(cm, min(upper, replicas - 1))
    cap = block_capacity(cm.nodes, snapshot.num_blocks)
    short = [b for b, c in enumerate(cap) if c < replicas]
    if short:
        where = "blocks short of nodes (fewer than %d alive nodes serve them): %s" % (replicas, _ranges(short))
    else:
        where = "every block has %d+ nodes, but their spans do not chain into %d disjoint replicas" % (
            replicas,
            replicas,
        )
    return RoutingError(
        f"model {snapshot.model}: only {have} node-disjoint replica(s) exist, {replicas} requested; {where}. "
        f"Ask for fewer replicas (--replicas {max(have, 1)}) or wait for operators to serve those blocks "
        f"(`tessera router advise --model {snapshot.model}`)."
    )


def _ranges(blocks: list[int]) -> str:
    """[1,2,3,7] -> '[1, 4), [7, 8)' (half-open, like every span)."""
    out, start = [], None
    for j, b in enumerate(blocks):
        if start is None:
            start = b
        if j + 1 == len(blocks) or blocks[j + 1] != b + 1:
            out.append(f"[{start}, {b + 1})")
            start = None
    return ", ".join(out)


def _widest(cm: costmod.CostModel, replicas: int) -> SearchResult:
    """Throughput mode: maximise the slowest hop's tokens/s, then minimise the objective."""
    cands = sorted({n.throughput / k for n in cm.nodes for k in range(1, n.blocks + 1)}, reverse=True)
    lo, hi = 0, len(cands) - 1  # cands[hi] is feasible (no hop is limited below its span)
    while lo < hi:
        mid = (lo + hi) // 2
        if search(cm, replicas, limit=_limits(cm, cands[mid]), first_feasible=True).replicas is not None:
            hi = mid
        else:
            lo = mid + 1
    logger.debug("widest path: %.3f tokens/s after %d candidates", cands[lo], len(cands))
    return search(cm, replicas, limit=_limits(cm, cands[lo]))


def plan_replicas(
    snapshot: Snapshot, replicas: int, mode: Mode | str = Mode.LATENCY, weights: Weights | None = None
) -> RoutedPlan:
    """Route ``replicas`` node-disjoint replicas of ``snapshot.model``.

    Raises :class:`RoutingError` when the network cannot carry that many.
    """
    mode = Mode.parse(mode)
    weights = weights or Weights()
    if replicas < 1:
        raise RoutingError(f"replicas must be at least 1, got {replicas}")
    if snapshot.num_blocks < 1:
        raise RoutingError(f"model {snapshot.model} has no blocks; check the model registry")
    cm = costmod.build(snapshot, mode, weights)
    if not cm.nodes:
        raise RoutingError(
            f"no alive node serves model {snapshot.model}; start workers "
            f"(`tessera operator run`) or check the model name"
        )
    res = search(cm, replicas)
    if res.replicas is None:
        raise _shortage(snapshot, cm, replicas, res.relaxed_units)
    if mode is Mode.THROUGHPUT:
        res = _widest(cm, replicas)
    chains = sorted(res.replicas, key=lambda ch: cm.replica_cost(ch).objective)
    plan = Plan(
        model=snapshot.model,
        num_blocks=snapshot.num_blocks,
        replicas=tuple(Replica(tuple(Hop(NodeId(cm.nodes[i].node), a, b) for i, a, b in ch)) for ch in chains),
    )
    plan.validate()
    costs: tuple[ReplicaCost, ...] = tuple(cm.replica_cost(ch) for ch in chains)
    total = sum(c.objective for c in costs)
    if not math.isclose(total, res.objective, rel_tol=1e-6, abs_tol=1e-6):  # pragma: no cover - invariant
        logger.warning("plan objective %.6f differs from the flow's %.6f", total, res.objective)
    logger.info(
        "planned %s: %d replica(s), mode %s, latency/token %s ms, %d search node(s)",
        snapshot.model, replicas, mode.value, [round(c.latency_ms, 2) for c in costs], res.explored,
    )
    return RoutedPlan(plan=plan, mode=mode, costs=costs, objective=total, optimal=res.optimal)
