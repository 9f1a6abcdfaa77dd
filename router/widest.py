"""Throughput mode's bottleneck: the largest ``tau`` (tokens/s) every hop can keep up.

Node ``i`` serving ``n`` blocks runs at ``throughput_i / n`` tokens/s, so at a
target ``tau`` it may serve at most ``L_i = floor(throughput_i / tau)`` blocks.
Feasibility of ``R`` node-disjoint replicas under those limits is monotone in
``tau``, so ``tau`` is found by binary search over the finite candidate set
``{throughput_i / n}``:

1. Fast lower bound. Pick for each node at most one window of
   ``min(L_i, span)`` blocks so that every block is covered ``R`` times (sweep
   left to right; at an under-covered block place the unused node whose window
   reaches furthest, ties to the node whose span ends first). An ``R``-fold
   cover by intervals always splits into ``R`` chains: sweep the boundaries; a
   chain that ends at ``k`` takes an unassigned window covering block ``k``,
   trimmed to start at ``k`` (at most one window per chain covers ``k``
   already, so one is always free). The sweep is a heuristic: it can miss a
   cover that exists, never invent one.
2. Exactness. Above the greedy ``tau`` the exact branch and bound of
   :mod:`router.search` (windows make the limits exact) decides feasibility,
   within a budget of search nodes. If it proves the next candidate
   infeasible the bottleneck is optimal; if the budget runs out the plan is
   reported as not proven optimal.

Without limits the cover is just every block served by ``R`` nodes, so ``R``
disjoint replicas exist exactly when every block's capacity is at least ``R``.
"""

from __future__ import annotations

import numpy as np

from router.cost import CostModel
from router.search import search

Chain = list[tuple[int, int, int]]


def limits(cm: CostModel, tau: float) -> np.ndarray:
    """Most blocks each node may serve in one hop and still run at ``tau`` tokens/s."""
    thr = np.array([n.throughput for n in cm.nodes], dtype=float)
    return np.floor(thr / tau * (1 + 1e-12)).astype(np.int64)


def cover(cm: CostModel, replicas: int, limit: np.ndarray) -> list[tuple[int, int, int]] | None:
    """Windows ``(node, start, end)`` covering every block ``replicas`` times, or None."""
    nb = cm.num_blocks
    cov = np.zeros(nb + 1, dtype=np.int64)
    used: set[int] = set()
    placed = []
    by_start = sorted(range(len(cm.nodes)), key=lambda i: cm.nodes[i].start)
    for k in range(nb):
        while cov[k] < replicas:
            best, reach = -1, k
            for i in by_start:
                n = cm.nodes[i]
                if n.start > k:
                    break
                if i in used or k >= n.end or limit[i] < 1:
                    continue
                r = min(k + int(limit[i]), n.end)
                if r > reach or (r == reach and best >= 0 and n.end < cm.nodes[best].end):
                    best, reach = i, r
            if best < 0:
                return None
            n = cm.nodes[best]
            start = max(n.start, reach - int(limit[best]))
            used.add(best)
            placed.append((best, start, reach))
            cov[start:reach] += 1
    return placed


def split(cm: CostModel, replicas: int, windows: list[tuple[int, int, int]]) -> list[Chain]:
    """Turn an ``replicas``-fold cover into that many chains (cheapest window first)."""
    nb = cm.num_blocks
    free = list(windows)
    chains: list[Chain] = [[] for _ in range(replicas)]
    reach = [0] * replicas
    for k in range(nb):
        for c in range(replicas):
            if reach[c] != k:
                continue
            opts = [w for w in free if w[1] <= k < w[2]]
            i, _, end = min(opts, key=lambda w: cm.hop_cost(w[0], k, w[2]) / (w[2] - k))
            free.remove((i, _, end))
            chains[c].append((i, k, end))
            reach[c] = end
    return chains


def widest(cm: CostModel, replicas: int, max_nodes: int = 8) -> tuple[float, list[Chain], bool] | None:
    """The best bottleneck ``tau``, a valid plan achieving it, and whether ``tau`` is proven optimal."""
    cands = sorted({n.throughput / k for n in cm.nodes for k in range(1, n.blocks + 1)}, reverse=True)
    lo, hi = 0, len(cands) - 1  # the lowest candidate lets every node serve its whole span
    if cover(cm, replicas, limits(cm, cands[hi])) is None:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if cover(cm, replicas, limits(cm, cands[mid])) is not None:
            hi = mid
        else:
            lo = mid + 1
    plan = split(cm, replicas, cover(cm, replicas, limits(cm, cands[hi])))
    lo, exact, probe = 0, True, hi - 1  # first: is the candidate just above the greedy's feasible?
    while lo < hi:
        res = search(cm, replicas, limit=limits(cm, cands[probe]), first_feasible=True, max_nodes=max_nodes)
        if res.replicas is not None:
            hi, plan = probe, res.replicas
        elif res.optimal:  # proven infeasible
            lo = probe + 1
        else:  # budget exhausted: keep the best proven-feasible bottleneck
            exact = False
            break
        probe = (lo + hi) // 2
    return cands[hi], plan, exact
