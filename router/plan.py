"""``plan_replicas``: the router's entry point. Pure: a snapshot in, a plan out.

* latency and price modes: exact minimum total objective over ``R``
  node-disjoint replicas (:func:`router.search.search`).
* throughput mode (widest path): the largest ``tau`` such that ``R`` disjoint
  replicas exist in which every hop runs at ``tau`` tokens/s or more (node
  ``i`` serving ``n`` blocks runs at ``throughput_i / n``; see
  :mod:`router.widest`); among those plans, the lowest latency objective.
  Proving both optimal is a much larger search than in the other modes, so
  it runs within ``widest_max_nodes`` flow solves per question; when the budget
  runs out the plan is still valid and ``RoutedPlan.optimal`` is False.

If fewer than ``R`` disjoint replicas exist, :class:`RoutingError` says how many
do and which blocks are short of nodes.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from proto.errors import RoutingError
from proto.types import Hop, NodeId, Plan, Replica
from router import cost as costmod
from router.advise import block_capacity
from router.search import SearchResult, search
from router.types import Mode, ReplicaCost, RoutedPlan, Snapshot, Weights
from router.widest import cover, limits, split, widest

logger = logging.getLogger(__name__)


def _shortage(snapshot: Snapshot, cm: costmod.CostModel, replicas: int) -> RoutingError:
    """The error for too few disjoint replicas.

    Without hop-length limits, ``R`` node-disjoint replicas exist exactly when
    every block is served by ``R`` usable nodes (an ``R``-fold interval cover
    splits into ``R`` chains, see :mod:`router.widest`), so the number that
    exist is the smallest per-block capacity.
    """
    cap = block_capacity(cm.nodes, snapshot.num_blocks)
    have = min(cap)
    short = [b for b, c in enumerate(cap) if c < replicas]
    return RoutingError(
        f"model {snapshot.model}: only {have} node-disjoint replica(s) exist, {replicas} requested; "
        f"blocks short of nodes (fewer than {replicas} alive nodes serve them): {_ranges(short)}. "
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


def _widest(cm: costmod.CostModel, replicas: int, max_nodes: int) -> SearchResult:
    """Throughput mode: the best bottleneck, then the lowest objective at it."""
    found = widest(cm, replicas, max_nodes)
    if found is None:  # pragma: no cover - plan_replicas checked capacity first
        return SearchResult(None, float("inf"), True, 0, 0)
    tau, chains, exact = found
    seed = (sum(cm.replica_cost(ch).objective for ch in chains), chains)
    logger.debug("widest path: %.3f tokens/s (%s)", tau, "optimal" if exact else "best found")
    res = search(cm, replicas, limit=limits(cm, tau), incumbent=seed, max_nodes=max_nodes)
    return SearchResult(res.replicas, res.objective, res.optimal and exact, res.relaxed_units, res.explored)


def plan_replicas(
    snapshot: Snapshot,
    replicas: int,
    mode: Mode | str = Mode.LATENCY,
    weights: Weights | None = None,
    max_nodes: int = 2000,  # branch-and-bound nodes (flow solves) before settling for the best found
    widest_max_nodes: int = 8,  # the same per question in throughput mode (bottleneck proof and tie-break)
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
    if min(block_capacity(cm.nodes, snapshot.num_blocks)) < replicas:
        raise _shortage(snapshot, cm, replicas)
    if mode is Mode.THROUGHPUT:
        res = _widest(cm, replicas, widest_max_nodes)
    else:  # seeded with a valid plan, so even a capped search returns one
        seed = split(cm, replicas, cover(cm, replicas, np.array([n.blocks for n in cm.nodes])))
        incumbent = (sum(cm.replica_cost(ch).objective for ch in seed), seed)
        res = search(cm, replicas, max_nodes=max_nodes, incumbent=incumbent)
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
