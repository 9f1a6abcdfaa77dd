"""Branch and bound that turns the flow relaxation into an exact optimum.

Columns. Each column of the flow gadget (:mod:`router.flow`) is one node, or,
when hop lengths are limited (throughput mode: node ``i`` may serve at most
``L_i`` blocks in one hop), one *window* of a node: a sliding window of
``L_i`` blocks inside its span. Every segment of at most ``L_i`` blocks lies in
some window, so the length limit is exact in the relaxation.

The relaxation may still use one node as two segments (in two replicas, twice
in one, or through two windows). Restrictions are ranges of boundaries where a
column may start (``elo..ehi``) and stop (``xlo..xhi``); a restricted
relaxation is still a flow, so it stays a lower bound. For a node with two
segments ``S1 = [a1, b1)`` and ``S2 = [a2, b2)`` (``S1`` first by start, then
end) pick a boundary ``m``: ``b1`` if they are disjoint, ``a2`` if ``S2``
starts inside ``S1``, ``b1`` if both start together. Every single interval
``[a, b)`` has ``b <= m``, ``a >= m`` or ``a < m < b``, and each of those three
children (applied to all the node's columns) excludes ``S1`` or ``S2``. When
``S1 == S2`` (two windows), the children are "not this window" and "only this
window". Each child strictly shrinks a range, so the search is finite.

Best-first on the lower bound: the first valid solution whose cost no open
node can beat is optimal.
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
    """Base arc costs per column, and their restriction per search node."""

    def __init__(self, cm: CostModel, limit: np.ndarray | None):
        nb = cm.num_blocks
        node, s, e = [], [], []
        for i, n in enumerate(cm.nodes):
            length = n.blocks if limit is None else min(int(limit[i]), n.blocks)
            for w in range(n.start, n.end - length + 1) if length > 0 else ():
                node.append(i)
                s.append(w)
                e.append(w + length)
        order = np.argsort(np.array(s, dtype=np.int64), kind="stable")  # by start: see ``win``
        self.node = np.array(node, dtype=np.int64)[order]
        self.s = np.array(s, dtype=np.int64)[order]
        self.e = np.array(e, dtype=np.int64)[order]
        node = self.node.tolist()
        self.cols_of: dict[int, np.ndarray] = {}
        for c, i in enumerate(node):
            self.cols_of.setdefault(i, []).append(c)  # type: ignore[arg-type]
        self.cols_of = {i: np.array(c) for i, c in self.cols_of.items()}
        K, C = nb + 1, len(node)
        longest = int((self.e - self.s).max()) if C else 0
        # columns that exist at boundary k: start in [k - longest, k]
        self.win = [(int(np.searchsorted(self.s, k - longest)), int(np.searchsorted(self.s, k, "right")))
                    for k in range(K)]
        kk = np.arange(K)[:, None]
        inside = (kk >= self.s) & (kk < self.e)
        ce = np.broadcast_to(cm.entry_inner[self.node], (K, C)).copy()
        ce[0] = cm.entry_head[self.node]
        cx = np.broadcast_to(cm.exit_inner[self.node], (K, C)).copy()
        cx[nb] = cm.exit_tail[self.node]
        self.ce, self.cx, self.kk = ce, cx, kk
        self.cc = np.where(inside, np.broadcast_to(cm.per_block[self.node], (K, C)), INF)

    def root(self) -> tuple[np.ndarray, ...]:
        """Start and stop ranges (elo, ehi, xlo, xhi) of each column's span."""
        return (self.s.copy(), self.e - 1, self.s + 1, self.e.copy())

    def costs(self, r: tuple[np.ndarray, ...]):
        elo, ehi, xlo, xhi = r
        kk = self.kk
        ce = np.where((kk >= elo) & (kk <= ehi), self.ce, INF)
        cx = np.where((kk >= xlo) & (kk <= xhi), self.cx, INF)
        return ce, self.cc, cx

    def by_node(self, flow) -> dict[int, list[tuple[int, int, int]]]:
        """Physical node -> its segments ``(start, end, column)``, sorted."""
        out: dict[int, list[tuple[int, int, int]]] = {}
        for c, segs in flow.segments().items():
            for a, b in segs:
                out.setdefault(int(self.node[c]), []).append((a, b, c))
        return {i: sorted(v) for i, v in out.items()}


def _children(arcs: _Arcs, r, i: int, segs: list[tuple[int, int, int]]):
    """Restrictions that exclude node ``i``'s two first segments (see module doc)."""
    (a1, b1, c1), (a2, b2, _) = segs[0], segs[1]
    if (a1, b1) == (a2, b2):  # the same blocks through two windows
        k1 = tuple(x.copy() for x in r)
        k1[1][c1] = -1
        k2 = tuple(x.copy() for x in r)
        others = arcs.cols_of[i][arcs.cols_of[i] != c1]
        k2[1][others] = -1
        return [k1, k2]
    m = a2 if a1 < a2 < b1 else b1
    cols = arcs.cols_of[i]
    kids = []
    for d_elo, d_ehi, d_xlo, d_xhi in ((None, m - 1, None, m), (m, None, m + 1, None), (None, m - 1, m + 1, None)):
        elo, ehi, xlo, xhi = (x.copy() for x in r)
        if d_elo is not None:
            elo[cols] = np.maximum(elo[cols], d_elo)
        if d_ehi is not None:
            ehi[cols] = np.minimum(ehi[cols], d_ehi)
        if d_xlo is not None:
            xlo[cols] = np.maximum(xlo[cols], d_xlo)
        if d_xhi is not None:
            xhi[cols] = np.minimum(xhi[cols], d_xhi)
        kids.append((elo, ehi, xlo, xhi))
    return kids


def search(
    cm: CostModel,
    replicas: int,
    limit: np.ndarray | None = None,
    first_feasible: bool = False,
    max_nodes: int = 2000,  # search nodes before giving up optimality; each is one flow solve
    incumbent: "tuple[float, list[Chain]] | None" = None,  # a known valid plan (cost, chains)
) -> SearchResult:
    """Minimum total cost of ``replicas`` node-disjoint chains (exact unless capped).

    ``limit[i]``, if given, caps how many blocks node ``i`` may serve in one hop.
    With ``first_feasible`` the search stops at the first valid plan.
    """
    arcs = _Arcs(cm, limit)
    tie = itertools.count()
    heap: list = [(0.0, next(tie), arcs.root())]
    best: tuple[float, list[Chain]] | None = incumbent
    explored, relaxed_units = 0, None
    while heap:
        bound, _, r = heapq.heappop(heap)
        if best is not None and bound >= best[0] - TOL:
            break
        if explored >= max_nodes:
            logger.info("routing search stopped after %d nodes; returning the best plan found", explored)
            return SearchResult(best[1] if best else None, best[0] if best else INF, False, relaxed_units or 0, explored)
        explored += 1
        flow = min_cost_flow(*arcs.costs(r), replicas, arcs.win)
        if relaxed_units is None:
            relaxed_units = flow.units
        if flow.units < replicas or (best is not None and flow.cost >= best[0] - TOL):
            continue
        split = next(((i, s) for i, s in arcs.by_node(flow).items() if len(s) > 1), None)
        if split is None:
            found = [[(int(arcs.node[c]), a, b) for c, a, b in ch] for ch in chains(flow, cm.num_blocks)]
            best = (flow.cost, found)
            if first_feasible:
                break
            continue
        for kid in _children(arcs, r, *split):
            heapq.heappush(heap, (flow.cost, next(tie), kid))
    logger.debug("routing search: %d nodes explored", explored)
    if best is None:
        return SearchResult(None, INF, True, relaxed_units or 0, explored)
    return SearchResult(best[1], best[0], True, relaxed_units or 0, explored)
