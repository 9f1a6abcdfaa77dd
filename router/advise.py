"""Rebalancing advice: which blocks are under-served, and what span to take.

Accepts any node objects with ``start``, ``end`` and optionally ``throughput``,
``active`` (or ``status == "active"``, as :class:`chain.records.NodeRecord`
has) and ``alive`` (as :class:`router.types.NodeView` has).
"""

from __future__ import annotations

from typing import Iterable, Sequence


def _usable(n) -> bool:
    active = n.active if hasattr(n, "active") else getattr(n, "status", "active") == "active"
    return bool(active) and bool(getattr(n, "alive", True))


def block_capacity(nodes: Iterable, num_blocks: int) -> list[int]:
    """Number of active nodes whose registered span covers each block."""
    cap = [0] * num_blocks
    for n in nodes:
        if not _usable(n):
            continue
        for b in range(max(int(n.start), 0), min(int(n.end), num_blocks)):
            cap[b] += 1
    return cap


def block_throughput(nodes: Iterable, num_blocks: int) -> list[float]:
    """Advertised block-tokens/s available on each block, summed over active nodes."""
    out = [0.0] * num_blocks
    for n in nodes:
        if not _usable(n):
            continue
        for b in range(max(int(n.start), 0), min(int(n.end), num_blocks)):
            out[b] += float(getattr(n, "throughput", 0) or 0)
    return out


def suggest_span(nodes: Sequence, num_blocks: int, max_blocks: int | None = None) -> tuple[int, int]:
    """The most under-served window ``[start, end)`` of ``min(max_blocks, num_blocks)`` blocks.

    Windows are ranked by the fewest nodes on their worst-served block, then by
    the fewest nodes in total, then by the least advertised throughput; ties go
    to the earliest window. On an empty network this is ``(0, max_blocks)``.
    Without ``max_blocks`` it is the first longest run of the least-served blocks
    (the gap a new node fills without doubling what others already serve).
    """
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
    if max_blocks is None:
        return _least_served_run(block_capacity(nodes, num_blocks))
    if max_blocks < 1:
        raise ValueError(f"max_blocks must be >= 1, got {max_blocks}; how many blocks fit in this node's memory?")
    width = min(max_blocks, num_blocks)
    cap = block_capacity(nodes, num_blocks)
    thr = block_throughput(nodes, num_blocks)
    best = min(
        range(num_blocks - width + 1),
        key=lambda s: (min(cap[s : s + width]), sum(cap[s : s + width]), sum(thr[s : s + width]), s),
    )
    return best, best + width


def _least_served_run(cap: list[int]) -> tuple[int, int]:
    """The first longest run ``[start, end)`` of blocks with the least capacity."""
    low = min(cap)
    best, start = (0, 0), None
    for b, c in enumerate(cap + [low + 1]):
        if c == low and start is None:
            start = b
        elif c != low and start is not None:
            if b - start > best[1] - best[0]:
                best = (start, b)
            start = None
    return best
