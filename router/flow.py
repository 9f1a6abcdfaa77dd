"""Min-cost flow over the interval gadget: the relaxation the planner starts from.

Graph. Boundary vertices ``b_k`` for ``k = 0..B`` (block boundaries). Each node
``i`` with allowed span ``[s, e)`` gets a chain of internal vertices ``v_{k,i}``
for ``k = s..e`` and three kinds of unit-capacity arc:

* entry ``E(k,i): b_k -> v_{k,i}`` (the node starts serving at block ``k``),
* compute ``C(k,i): v_{k,i} -> v_{k+1,i}`` (the node serves block ``k``),
* exit ``X(k,i): v_{k,i} -> b_k`` (the node stops before block ``k``).

A unit of flow from ``b_0`` to ``b_B`` is a replica; its cost is the sum of
the hop costs of :mod:`router.cost`. Because each compute arc carries at most
one unit, no block of a node is served twice, but a node may still appear as
two separate segments (in two replicas, or twice in one). That is why this is
only a *relaxation* (a lower bound); :mod:`router.search` branches until every
node appears at most once, which makes the final answer exact.

Algorithm: successive shortest paths. Each shortest path in the residual
graph is found by label-correcting sweeps over boundaries in increasing order,
vectorised over nodes with numpy; the few reversed arcs of earlier paths are
relaxed in plain Python and trigger another sweep from the leftmost block they
improved. Arrays are laid out ``(K, N)`` with ``K = B + 1``; ``inf`` marks an
arc that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INF = np.inf
TOL = 1e-9  # improvements smaller than this (mode units) are float noise


@dataclass
class Flow:
    """Unit flows on the three arc kinds, each a ``(K, N)`` bool array."""

    e: np.ndarray
    c: np.ndarray
    x: np.ndarray
    units: int = 0
    cost: float = 0.0

    def segments(self) -> dict[int, list[tuple[int, int]]]:
        """Node index -> its served segments ``[(start, end), ...]`` in block order."""
        out: dict[int, list[tuple[int, int]]] = {}
        for i in np.nonzero(self.e.any(axis=0))[0]:
            i = int(i)
            segs, open_at = [], None
            for k in range(self.e.shape[0]):
                if self.x[k, i] and open_at is not None:
                    segs.append((open_at, k))
                    open_at = None
                if self.e[k, i]:
                    open_at = k
            out[i] = segs
        return out


def chains(flow: Flow, num_blocks: int) -> list[list[tuple[int, int, int]]]:
    """Split the flow into ``flow.units`` replicas of (node, start, end) hops."""
    starts: dict[int, list[tuple[int, int, int]]] = {}
    for i, segs in flow.segments().items():
        for a, b in segs:
            starts.setdefault(a, []).append((i, a, b))
    pending: dict[int, list[list[tuple[int, int, int]]]] = {0: [[] for _ in range(flow.units)]}
    for k in range(num_blocks):
        for hop in sorted(starts.get(k, [])):
            chain = pending[k].pop()
            chain.append(hop)
            pending.setdefault(hop[2], []).append(chain)
    return pending.get(num_blocks, [])


def _shortest(ce, cc, cx, f: Flow, win=None):
    """Distances and predecessors from ``b_0`` in the residual graph of ``f``.

    ``win[k] = (lo, hi)``, if given, bounds the columns that exist at boundary
    ``k`` (columns sorted by span start); the sweep then touches only those.
    """
    K, N = ce.shape
    fe = np.where(f.e, INF, ce)
    fc = np.where(f.c, INF, cc)
    fx = np.where(f.x, INF, cx)
    rev_e: dict[int, list[int]] = {}
    rev_x: dict[int, list[int]] = {}
    for k, i in zip(*np.nonzero(f.e)):
        rev_e.setdefault(int(k), []).append(int(i))
    for k, i in zip(*np.nonzero(f.x)):
        rev_x.setdefault(int(k), []).append(int(i))
    # descending k: a reversed segment propagates its whole length in one pass
    rev_c = sorted(((int(k), int(i)) for k, i in zip(*np.nonzero(f.c))), reverse=True)
    win = win or [(0, N)] * K
    db = np.full(K, INF)
    db[0] = 0.0
    dv = np.full((K, N), INF)
    pv = np.zeros((K, N), dtype=np.int8)  # 1 C fwd, 2 E fwd, 3 X reversed, 4 C reversed
    pb = [(-1, 0)] * K  # (node, 1 X fwd | 2 E reversed)
    k0 = 0
    while k0 < K:
        for k in range(k0, K):
            lo, hi = win[k]
            row = dv[k, lo:hi]
            if k > 0:
                cand = dv[k - 1, lo:hi] + fc[k - 1, lo:hi]
                m = cand < row - TOL  # TOL: float noise must not create predecessor cycles
                if m.any():
                    row[m] = cand[m]
                    pv[k, lo:hi][m] = 1
                cand = row + fx[k, lo:hi]
                if hi > lo:
                    j = int(np.argmin(cand))
                    if cand[j] < db[k] - TOL:
                        db[k] = cand[j]
                        pb[k] = (lo + j, 1)
                for i in rev_e.get(k, ()):
                    c = dv[k, i] - ce[k, i]
                    if c < db[k] - TOL:
                        db[k] = c
                        pb[k] = (i, 2)
            if db[k] < INF:
                for i in rev_x.get(k, ()):
                    c = db[k] - cx[k, i]
                    if c < dv[k, i] - TOL:
                        dv[k, i] = c
                        pv[k, i] = 3
                cand = db[k] + fe[k, lo:hi]
                m = cand < row - TOL
                if m.any():
                    row[m] = cand[m]
                    pv[k, lo:hi][m] = 2
        k0 = K
        for k, i in rev_c:
            c = dv[k + 1, i] - cc[k, i]
            if c < dv[k, i] - TOL:
                dv[k, i] = c
                pv[k, i] = 4
                k0 = min(k0, k)
    return db, pv, pb


def _augment(f: Flow, pv, pb, K: int) -> None:
    """Push one unit along the predecessor path from ``b_0`` to ``b_B``."""
    at_b, k, i = True, K - 1, -1
    for _ in range(8 * K * max(f.e.shape[1], 1) + 8):
        if at_b:
            if k == 0:
                return
            i, kind = pb[k]
            if kind == 1:
                f.x[k, i] = True
            else:
                f.e[k, i] = False
            at_b = False
            continue
        kind = pv[k, i]
        if kind == 1:
            f.c[k - 1, i] = True
            k -= 1
        elif kind == 2:
            f.e[k, i] = True
            at_b = True
        elif kind == 3:
            f.x[k, i] = False
            at_b = True
        elif kind == 4:
            f.c[k, i] = False
            k += 1
        else:  # pragma: no cover - would mean a broken predecessor tree
            raise RuntimeError(f"flow: no predecessor at block {k}, node {i}")
    raise RuntimeError("flow: predecessor walk did not terminate")  # pragma: no cover


def min_cost_flow(ce: np.ndarray, cc: np.ndarray, cx: np.ndarray, units: int, win=None) -> Flow:
    """Send up to ``units`` units from ``b_0`` to ``b_B`` at minimum total cost.

    Returns the flow; ``flow.units`` is less than asked when no more augmenting
    path exists (then ``flow.cost`` is the cost of what was sent).
    """
    K, N = ce.shape
    f = Flow(np.zeros((K, N), bool), np.zeros((K, N), bool), np.zeros((K, N), bool))
    for _ in range(units):
        db, pv, pb = _shortest(ce, cc, cx, f, win)
        if not np.isfinite(db[K - 1]):
            break
        _augment(f, pv, pb, K)
        f.units += 1
        f.cost += float(db[K - 1])
    return f
