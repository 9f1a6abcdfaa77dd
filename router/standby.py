"""Standbys for failover: ``add_standbys`` gives each span of a plan a spare node, where one exists.

A standby backs one primary hop: it serves the same blocks if the primary fails or stalls
mid-generation (the head continues the replica on it). The rules come from the contract:

* a standby has its primary's exact span and is node-disjoint from every other hop of the job
  (``JobPlan.check``);
* the fee floor counts, per primary, the dearer of it and its standby
  (``NodeRegistry.checkHops``), so a standby is chosen only if it asks no more than its
  primary: standbys never raise the fee floor, and are paid only if they serve.

The head's span gets none: the head drives the replica, so a failed head cannot hand it over.
Among eligible nodes the cheapest wins, then the best reputation, then the lowest latency.
"""

from __future__ import annotations

from proto.types import Hop, Plan, Replica
from router.types import NodeView, Snapshot


def add_standbys(plan: Plan, snapshot: Snapshot) -> Plan:
    """``plan`` with one standby per non-head primary hop that an unused alive node can back."""
    nodes = {n.node.lower(): n for n in snapshot.nodes}
    used = {h.node.lower() for rep in plan.replicas for h in (*rep.hops, *rep.standbys)}
    replicas = []
    for rep in plan.replicas:
        backed = {(s.start, s.end) for s in rep.standbys}
        standbys = list(rep.standbys)
        for hop in rep.hops[1:]:
            if (hop.start, hop.end) in backed:
                continue
            primary = nodes.get(hop.node.lower())
            best = _pick(snapshot.nodes, hop, used, primary.price_per_block if primary else 0)
            if best is not None:
                used.add(best.node.lower())
                standbys.append(Hop(best.node, hop.start, hop.end))
        replicas.append(Replica(rep.hops, tuple(standbys)))
    out = Plan(plan.model, plan.num_blocks, tuple(replicas))
    out.validate()
    return out


def _pick(nodes: tuple[NodeView, ...], hop: Hop, used: set[str], max_price: int) -> NodeView | None:
    fits = [n for n in nodes if n.alive and n.node.lower() not in used and n.start <= hop.start
            and hop.end <= n.end and n.price_per_block <= max_price]
    if not fits:
        return None
    return min(fits, key=lambda n: (n.price_per_block, -n.reputation,
                                    n.latency_ms if n.latency_ms is not None else float("inf"), n.node.lower()))
