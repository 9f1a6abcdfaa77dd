"""Branch and bound that turns the flow relaxation into an exact optimum.

The relaxation (:mod:`router.flow`) may let one node serve two separate
segments, or (in throughput mode) a segment longer than its length limit.
Every restriction here is a range of boundaries where node ``i`` may start
(``elo..ehi``) and stop (``xlo..xhi``); the relaxation with restricted ranges
is still a flow, so it stays a valid lower bound. Branching rules, each
excluding the current relaxed solution while keeping every valid one:

* node ``i`` used as segments ``[a1, b1), [a2, b2), ...`` (``b1 < a2``); with
  ``m = b1`` every single interval ``[a, b)`` satisfies one of ``b <= m``,
  ``a >= m`` or ``a < m < b``. Three children: stop by ``m``; start from
  ``m``; start before ``m`` and stop after it. In the last child every unit
  through ``i`` crosses compute arc ``C(m, i)`` of capacity one, so ``i`` can
  never again be split.
* segment ``[a, b)`` of node ``i`` longer than its limit ``L``: every allowed
  interval either stops by ``a + L`` or starts after ``a``. Two children.

Best-first search on the lower bound; the first valid solution whose bound is
not beaten by any open node is optimal.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from dataclasses import dataclass

import numpy as np

from router.cost import CostModel
from router.flow import INF, TOL, chains, min_cost_flow

logger = logging.getLogger(__name__)

Chain = list[tuple[int, int, int]]  # (node index, start, end) hops


@dataclass(frozen=True)
class SearchResult:
    replicas: list[Chain] | None  # None: no valid plan with this many replicas
    objective: float
    optimal: bool  # False when the node limit stopped the search early
    relaxed_units: int  # disjoint units the root relaxation could route (an upper bound)
    explored: int  # branch-and-bound nodes solved


class _Arcs:
    """Base arc costs of a cost model, and their restriction per search node."""

    def __init__(self, cm: CostModel):
        nb = cm.num_blocks
        K, N = nb + 1, len(cm.nodes)
        self.K, self.N = K, N
        self.s = np.array([n.start for n in cm.nodes], dtype=np.int64)
        self.e = np.array([n.end for n in cm.nodes], dtype=np.int64)
        kk = np.arange(K)[:, None]
        inside = (kk >= self.s) & (kk < self.e)  # block k served by node i's span
        ce = np.broadcast_to(cm.entry_inner, (K, N)).copy()
        ce[0] = cm.entry_head
        cx = np.broadcast_to(cm.exit_inner, (K, N)).copy()
        cx[nb] = cm.exit_tail
        self.ce, self.cx = ce, cx
        self.cc = np.where(inside, np.broadcast_to(cm.per_block, (K, N)), INF)
        self.kk = kk

    def root(self) -> tuple[np.ndarray, ...]:
        """Start and stop ranges (elo, ehi, xlo, xhi) of the registered spans."""
        return (self.s.copy(), self.e - 1, self.s + 1, self.e.copy())

    def costs(self, r: tuple[np.ndarray, ...]):
        elo, ehi, xlo, xhi = r
        kk = self.kk
        ce = np.where((kk >= elo) & (kk <= ehi), self.ce, INF)
        cx = np.where((kk >= xlo) & (kk <= xhi), self.cx, INF)
        return ce, self.cc, cx


def _violation(segs: dict[int, list[tuple[int, int]]], limit: np.ndarray | None, r):
    """Children restrictions for the first violation found, or None if valid."""
    elo, ehi, xlo, xhi = r
    worst = max(segs.items(), key=lambda kv: len(kv[1]), default=None)
    if worst is not None and len(worst[1]) > 1:
        i, ss = worst
        m = ss[0][1]
        kids = []
        for d_ehi, d_elo, d_xlo, d_xhi in ((m - 1, None, None, m), (None, m, m + 1, None), (m - 1, None, m + 1, None)):
            c = [elo.copy(), ehi.copy(), xlo.copy(), xhi.copy()]
            if d_elo is not None:
                c[0][i] = max(c[0][i], d_elo)
            if d_ehi is not None:
                c[1][i] = min(c[1][i], d_ehi)
            if d_xlo is not None:
                c[2][i] = max(c[2][i], d_xlo)
            if d_xhi is not None:
                c[3][i] = min(c[3][i], d_xhi)
            kids.append(tuple(c))
        return kids
    if limit is not None:
        for i, ss in segs.items():
            a, b = ss[0]
            if b - a > limit[i]:
                k1 = (elo, ehi, xlo, xhi.copy())
                k1[3][i] = min(xhi[i], a + int(limit[i]))
                k2 = (elo.copy(), ehi, xlo, xhi)
                k2[0][i] = max(elo[i], a + 1)
                return [k1, k2]
    return None


def search(
    cm: CostModel,
    replicas: int,
    limit: np.ndarray | None = None,
    first_feasible: bool = False,
    max_nodes: int = 2000,  # search nodes before giving up optimality; each is one flow solve
) -> SearchResult:
    """Minimum total cost of ``replicas`` node-disjoint chains (exact unless capped).

    ``limit[i]``, if given, caps how many blocks node ``i`` may serve in one hop.
    With ``first_feasible`` the search stops at the first valid plan.
    """
    arcs = _Arcs(cm)
    root = arcs.root()
    if limit is not None:
        root[1][limit <= 0] = -1  # a node allowed zero blocks cannot start anywhere
    tie = itertools.count()
    heap: list = [(0.0, next(tie), root)]
    best: tuple[float, list[Chain]] | None = None
    explored, relaxed_units = 0, None
    while heap:
        bound, _, r = heapq.heappop(heap)
        if best is not None and bound >= best[0] - TOL:
            break
        if explored >= max_nodes:
            logger.warning("routing search stopped after %d nodes; returning the best plan found", explored)
            return SearchResult(best[1] if best else None, best[0] if best else INF, False, relaxed_units or 0, explored)
        explored += 1
        flow = min_cost_flow(*arcs.costs(r), replicas)
        if relaxed_units is None:
            relaxed_units = flow.units
        if flow.units < replicas or (best is not None and flow.cost >= best[0] - TOL):
            continue
        segs = flow.segments()
        kids = _violation(segs, limit, r)
        if kids is None:
            best = (flow.cost, chains(flow, cm.num_blocks))
            if first_feasible:
                break
            continue
        for kid in kids:
            heapq.heappush(heap, (flow.cost, next(tie), kid))
    logger.debug("routing search: %d nodes explored", explored)
    if best is None:
        return SearchResult(None, INF, True, relaxed_units or 0, explored)
    return SearchResult(best[1], best[0], True, relaxed_units or 0, explored)
