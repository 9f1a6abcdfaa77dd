"""``tessera bench routing``: planning time and plan quality on simulated networks.

* Planning time of :func:`router.plan.plan_replicas` for 1,000 nodes over 30
  and 80 blocks with R = 3 (latency mode): median and p95 over ``--runs``
  plans (5 networks, seeds fixed, cycled); every run's time is kept.
* Throughput mode (widest path) on 1,000 nodes x 30 blocks, R = 3, for
  reference: its proof of optimality is budgeted (see :mod:`router.plan`).
* Plan quality on heterogeneous networks (node speeds, round trips and
  bandwidths log-normal over two orders of magnitude; seeds fixed): the
  predicted per-token latency of a random valid plan and of a greedy plan
  (best next hop: at each boundary the unused node with the lowest cost per
  block advanced, serving to the end of its span) divided by the router's.
  Ratios above 1 mean the router's plan is faster. The comparison uses the
  router's own cost model, so it measures the search, not the model.

Prints one JSON object on the last line with ``--json``; ``--save FILE`` writes it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from bench._out import HEADLINE, emit
from proto.errors import RoutingError
from proto.types import NodeId
from router import cost as costmod
from router.plan import plan_replicas
from router.types import Mode, NodeView, Snapshot, Weights


def simulate(n_nodes: int, num_blocks: int, seed: int, model: str = "sim") -> Snapshot:
    """A heterogeneous network: spans of 1..num_blocks/4 blocks anywhere in the model."""
    rng = random.Random(seed)
    nodes = []
    for j in range(n_nodes):
        length = rng.randint(1, max(1, num_blocks // 4))
        start = rng.randint(0, num_blocks - length)
        nodes.append(NodeView(
            node=NodeId(f"0x{seed:08x}{j:032x}"), endpoint=f"10.0.{j // 250}.{j % 250}:50051", model=model,
            start=start, end=start + length,
            stake_wei=int(rng.lognormvariate(0, 1) * 1e18),
            reputation=min(10.0, max(0.1, rng.lognormvariate(0, 0.5))),
            throughput=rng.lognormvariate(6.0, 1.0),  # block-tokens/s: median ~400, 5-95% ~80-2000
            price_per_block=int(rng.lognormvariate(0, 1) * 1e8),
            latency_ms=rng.lognormvariate(3.0, 1.0),  # round trip: median 20 ms, 5-95% ~4-100 ms
            bandwidth=rng.lognormvariate(16.0, 1.0),  # bytes/s: median ~9 MB/s
        ))
    return Snapshot(model=model, num_blocks=num_blocks, nodes=tuple(nodes), bytes_per_token=640.0)


def _random_plan(cm: costmod.CostModel, replicas: int, rng: random.Random, tries: int = 200):
    """A uniformly random valid plan: random node covering the boundary, random end."""
    for _ in range(tries):
        used: set[int] = set()
        plan = []
        for _ in range(replicas):
            k, hops = 0, []
            while k < cm.num_blocks:
                opts = [i for i, n in enumerate(cm.nodes) if i not in used and n.start <= k < n.end]
                if not opts:
                    break
                i = rng.choice(opts)
                b = rng.randint(k + 1, cm.nodes[i].end)
                hops.append((i, k, b))
                used.add(i)
                k = b
            if k < cm.num_blocks:
                break
            plan.append(hops)
        if len(plan) == replicas:
            return plan
    return None


def _greedy_plan(cm: costmod.CostModel, replicas: int):
    """Best next hop: lowest cost per block advanced, serving to the end of the span."""
    used: set[int] = set()
    plan = []
    for _ in range(replicas):
        k, hops = 0, []
        while k < cm.num_blocks:
            opts = [i for i, n in enumerate(cm.nodes) if i not in used and n.start <= k < n.end]
            if not opts:
                return None
            i = min(opts, key=lambda i: cm.hop_cost(i, k, cm.nodes[i].end) / (cm.nodes[i].end - k))
            hops.append((i, k, cm.nodes[i].end))
            used.add(i)
            k = cm.nodes[i].end
        plan.append(hops)
    return plan


def _latency(cm, plan) -> float:
    return sum(cm.replica_cost(h).latency_ms for h in plan) / len(plan)


def timing(n_nodes: int, num_blocks: int, replicas: int, runs: int, mode: Mode = Mode.LATENCY) -> dict:
    """Planning milliseconds of ``runs`` plans: every run in order (``runs_ms``), their median and p95."""
    snaps = [simulate(n_nodes, num_blocks, seed) for seed in range(5)]
    ts, hops, proven = [], [], 0
    for r in range(runs):
        t0 = time.perf_counter()
        rp = plan_replicas(snaps[r % len(snaps)], replicas, mode)
        ts.append(round((time.perf_counter() - t0) * 1000.0, 2))
        hops.append(sum(len(x.hops) for x in rp.plan.replicas) / replicas)
        proven += rp.optimal
    ranked = sorted(ts)
    return {"mode": mode.value, "proven_optimal": proven, "nodes": n_nodes, "blocks": num_blocks, "replicas": replicas,
            "runs": runs, "median_ms": round(statistics.median(ts), 3), "p95_ms": ranked[min(len(ts) - 1, int(0.95 * len(ts)))],
            "runs_ms": ts, "mean_hops_per_replica": round(statistics.mean(hops), 2)}


def quality(n_nodes: int, num_blocks: int, replicas: int, seeds: int) -> dict:
    vs_random, vs_greedy, router_ms, skipped = [], [], [], 0
    for seed in range(seeds):
        snap = simulate(n_nodes, num_blocks, 1000 + seed)
        cm = costmod.build(snap, Mode.LATENCY, Weights())
        try:
            rp = plan_replicas(snap, replicas, Mode.LATENCY)
        except RoutingError:  # this random network cannot carry R disjoint replicas
            skipped += 1
            continue
        ours = _latency(cm, [cm.hops_of(r.hops) for r in rp.plan.replicas])
        router_ms.append(ours)
        rnd = _random_plan(cm, replicas, random.Random(seed))
        greedy = _greedy_plan(cm, replicas)
        if rnd:
            vs_random.append(_latency(cm, rnd) / ours)
        if greedy:
            vs_greedy.append(_latency(cm, greedy) / ours)
    g = statistics.geometric_mean
    return {"nodes": n_nodes, "blocks": num_blocks, "replicas": replicas, "networks": seeds,
            "router_latency_ms_median": round(statistics.median(router_ms), 2),
            "random_over_router_geomean": round(g(vs_random), 3) if vs_random else None,
            "greedy_over_router_geomean": round(g(vs_greedy), 3) if vs_greedy else None,
            "greedy_over_router_min": round(min(vs_greedy), 3) if vs_greedy else None,
            "skipped_infeasible": skipped, "greedy_feasible": len(vs_greedy), "random_feasible": len(vs_random)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench routing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--runs", type=int, default=15, help="timed plans per network size")
    ap.add_argument("--seeds", type=int, default=10, help="simulated networks for the quality comparison")
    ap.add_argument("--save", help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    out = {
        "bench": "routing",
        "headline": HEADLINE,
        "timing": [timing(1000, nb, 3, args.runs) for nb in (30, 80)],
        "target_median_ms": 50,
        "throughput_mode": [timing(1000, 30, 3, max(1, args.runs // 5), Mode.THROUGHPUT)],
        "quality": [quality(300, 30, 1, args.seeds), quality(300, 30, 3, args.seeds), quality(1000, 80, 3, max(1, args.seeds // 2))],
    }
    if not args.json:
        for t in out["timing"]:
            print(f"plan {t['nodes']} nodes x {t['blocks']} blocks, R={t['replicas']}: median {t['median_ms']} ms, p95 {t['p95_ms']} ms")
        for q in out["quality"]:
            print(f"{q['nodes']} nodes x {q['blocks']} blocks, R={q['replicas']}: random/router {q['random_over_router_geomean']}, "
                  f"greedy/router {q['greedy_over_router_geomean']}")
    return emit(out, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
