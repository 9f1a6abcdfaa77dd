"""The per-hop cost model, shared by the planner, the brute-force tests and the bench.

A replica's predicted per-token latency (ms) is one trip round the ring as the
requester sees it::

    requester -> head  +  sum over hops of compute(blocks)  +  sum over inner links
    of (latency + transfer of the compressed activations)  +  tail -> requester

Link latencies follow a hub model: the router only measures round trips to
each node, so node ``i``'s one-way access latency is ``rtt_i / 2`` and a link
``i -> j`` costs ``rtt_i / 2 + rtt_j / 2`` (one-way). This keeps the cost of a
chain a sum of per-node terms, which is what lets the planner stay exact and
fast (a full pairwise matrix would need nodes^2 edges per block boundary).
Transfer time is charged to the receiving node's measured bandwidth.

Every hop's cost therefore splits into three parts, which the flow gadget of
:mod:`router.flow` puts on three kinds of arc:

* entry at boundary ``a``: link latency in + transfer in + trust penalty;
* one per block served: compute time (+ weighted price);
* exit at boundary ``b``: link latency out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from proto.types import Hop
from router.types import Mode, NodeView, ReplicaCost, Snapshot, Weights

HOP_EPS = 1e-6  # mode units per hop: makes every hop cost > 0, so ties prefer fewer hops
PRICE_TIE_MS = 1e-6  # price mode: gwei charged per ms of latency, only to break ties
MAX_REPUTATION = 10.0  # reputation is clamped to [0.1, 10] on chain
# Assumed speed of a node that advertised none and has not been measured yet (a fresh
# worker's Info reports 0 until it served): SmolLM2-135M on one CPU thread, block-tokens/s.
UNKNOWN_THROUGHPUT = 500.0


def eligible(snapshot: Snapshot) -> list[NodeView]:
    """Nodes a plan may use: alive, serving this model, with a sane span (an unknown
    speed is taken as :data:`UNKNOWN_THROUGHPUT`)."""
    out = []
    for n in snapshot.nodes:
        if not n.alive or n.model != snapshot.model:
            continue
        if not (0 <= n.start < n.end <= snapshot.num_blocks):
            continue
        out.append(n if n.throughput > 0 else replace(n, throughput=UNKNOWN_THROUGHPUT))
    return out


@dataclass(frozen=True)
class CostModel:
    """Per-node arc costs in mode units (arrays indexed like ``nodes``)."""

    snapshot: Snapshot
    mode: Mode
    nodes: tuple[NodeView, ...]
    entry_head: np.ndarray  # cost of entering at boundary 0
    entry_inner: np.ndarray  # cost of entering at an inner boundary
    per_block: np.ndarray  # cost per block served
    exit_inner: np.ndarray  # cost of leaving at an inner boundary
    exit_tail: np.ndarray  # cost of leaving at the last boundary
    # the latency part alone, ms (same split)
    t_entry_head: np.ndarray
    t_entry_inner: np.ndarray
    t_block: np.ndarray
    t_exit_inner: np.ndarray
    t_exit_tail: np.ndarray
    trust: np.ndarray  # weighted trust penalty per hop, mode units

    @property
    def num_blocks(self) -> int:
        return self.snapshot.num_blocks

    def entry(self, i: int, a: int) -> float:
        return float(self.entry_head[i] if a == 0 else self.entry_inner[i])

    def exit(self, i: int, b: int) -> float:
        return float(self.exit_tail[i] if b == self.num_blocks else self.exit_inner[i])

    def hop_cost(self, i: int, a: int, b: int) -> float:
        """Objective of node ``i`` serving ``[a, b)``."""
        return self.entry(i, a) + (b - a) * float(self.per_block[i]) + self.exit(i, b)

    def hop_tps(self, i: int, a: int, b: int) -> float:
        """Tokens per second of node ``i`` serving ``[a, b)``."""
        return float(self.nodes[i].throughput) / (b - a)

    def replica_cost(self, hops: list[tuple[int, int, int]]) -> ReplicaCost:
        """Predicted figures of a replica given as (node index, start, end) hops."""
        nb = self.num_blocks
        lat = 0.0
        for i, a, b in hops:
            lat += float(self.t_entry_head[i] if a == 0 else self.t_entry_inner[i])
            lat += (b - a) * float(self.t_block[i])
            lat += float(self.t_exit_tail[i] if b == nb else self.t_exit_inner[i])
        return ReplicaCost(
            latency_ms=lat,
            price_wei=sum(self.nodes[i].price_per_block * (b - a) for i, a, b in hops),
            trust_penalty=sum(float(self.trust[i]) for i, _, _ in hops),
            bottleneck_tps=min(self.hop_tps(i, a, b) for i, a, b in hops),
            objective=sum(self.hop_cost(i, a, b) for i, a, b in hops),
        )

    def index(self) -> dict[str, int]:
        return {n.node.lower(): i for i, n in enumerate(self.nodes)}

    def hops_of(self, replica_hops: tuple[Hop, ...]) -> list[tuple[int, int, int]]:
        idx = self.index()
        return [(idx[h.node.lower()], h.start, h.end) for h in replica_hops]


def build(snapshot: Snapshot, mode: Mode, weights: Weights) -> CostModel:
    """Turn a snapshot into per-node arc costs for ``mode`` and ``weights``."""
    nodes = tuple(eligible(snapshot))
    rtt = np.array(
        [n.latency_ms if n.latency_ms is not None else snapshot.default_latency_ms for n in nodes], dtype=float
    )
    req = np.array([snapshot.requester_latency_ms.get(n.node, r) for n, r in zip(nodes, rtt)], dtype=float)
    bw = np.array([n.bandwidth if n.bandwidth else snapshot.default_bandwidth for n in nodes], dtype=float)
    thr = np.array([n.throughput for n in nodes], dtype=float)
    price_gwei = np.array([n.price_per_block for n in nodes], dtype=float) / 1e9
    max_stake = max((n.stake_wei for n in nodes), default=0)
    trust = np.array(
        [
            weights.stake * math.log((max_stake + 1) / (n.stake_wei + 1))
            + weights.reputation * math.log(MAX_REPUTATION / min(max(n.reputation, 0.1), MAX_REPUTATION))
            for n in nodes
        ],
        dtype=float,
    ).reshape(len(nodes))
    t_entry_head = req / 2
    t_entry_inner = rtt / 2 + 1000.0 * snapshot.bytes_per_token / bw
    t_block = 1000.0 / thr
    t_exit_inner = rtt / 2
    t_exit_tail = req / 2
    if mode is Mode.PRICE:
        k = PRICE_TIE_MS
        parts = (k * t_entry_head, k * t_entry_inner, price_gwei + k * t_block, k * t_exit_inner, k * t_exit_tail)
    else:
        parts = (t_entry_head, t_entry_inner, t_block + weights.price * price_gwei, t_exit_inner, t_exit_tail)
    eh, ei, pb, xi, xt = parts
    return CostModel(
        snapshot, mode, nodes, eh + trust + HOP_EPS, ei + trust + HOP_EPS, pb, xi, xt,
        t_entry_head, t_entry_inner, t_block, t_exit_inner, t_exit_tail, trust,
    )
