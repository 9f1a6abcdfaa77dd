"""What ``bench.load`` reports: timings, settlement and conservation checks, gas, node CPU.

Everything is read back from the chain (JobFinalized through
:func:`tessera.requester.result`, balances, node records, every transaction
whose JobMarket event names a job) and from the nodes' own logs.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict

from tessera.requester import result

MEANINGS = {
    "jobs_per_minute": "jobs settled per minute, from the first submit to the last settlement",
    "submit_s": "run_job's own time: planning with live probes, checks, the submitJob transaction",
    "first_token_s": "from calling run_job to the job's first token on its token stream",
    "settle_s": "from calling run_job to the job seen finalized on chain",
    "gas": "gas of every transaction whose JobMarket event names the job (submit, commits, reveals, finalize)",
    "nodes_cpu": "CPU of each node process over the load phase: seconds, mean and peak cores",
    "machine_idle_share": "share of the machine's CPU time left idle during the load phase",
}
_HEAD_DONE = re.compile(r"job (\d+) replica (\d+): head done")


def snapshot(c, requesters: list[int]) -> dict:
    """Balances the conservation checks compare: contracts' ETH, nodes' earnings and stakes, requesters' credits."""
    cl = c.client()
    w3, dep = c.w3, c.deployment
    nodes = {n.address: cl.get_node(n.address) for n in c.nodes}
    return {"contracts_wei": sum(w3.eth.get_balance(a) for a in (dep.job_market, dep.node_registry,
                                                                  dep.model_registry)),
            "earnings": {a: r.earnings for a, r in nodes.items()}, "stakes": {a: r.stake for a, r in nodes.items()},
            "credits": {c.client(i).address: cl.credits_of(c.client(i).address) for i in requesters}}


def gas_by_job(c) -> dict[int, int]:
    """Gas of every transaction that emitted a JobMarket event naming a job, summed per job."""
    w3, market = c.w3, c.client().market
    events = [getattr(market.events, e["name"])() for e in market.abi
              if e["type"] == "event" and any(i["name"] == "jobId" for i in e["inputs"])]
    txs: dict[int, set] = defaultdict(set)
    for log in w3.eth.get_logs({"address": market.address, "fromBlock": c.deployment.block, "toBlock": "latest"}):
        for ev in events:
            try:
                args = ev.process_log(log)["args"]
            except Exception:  # noqa: BLE001 - another event's signature: try the next one
                continue
            txs[int(args["jobId"])].add(log["transactionHash"])
            break
    return {j: sum(w3.eth.get_transaction_receipt(h)["gasUsed"] for h in hs) for j, hs in txs.items()}


def head_runs(c) -> Counter:
    """How many times each (job, replica) was run to the end by a head, from every node's log."""
    runs: Counter = Counter()
    for node in c.nodes:
        for m in _HEAD_DONE.finditer(node.log.read_text(errors="replace")):
            runs[(int(m.group(1)), int(m.group(2)))] += 1
    return runs


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) of ``values`` by linear interpolation; None when empty (pure)."""
    if not values:
        return None
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (pos - lo), 3)


def _stats(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
            "max": round(max(values), 3) if values else None}


def build(c, jobs, before: dict, cpu: dict, t0: float, args, requesters: list[int]) -> dict:
    after = snapshot(c, requesters)
    cl = c.client()
    submitted = [j for j in jobs if j.job_id]
    results = {j.job_id: result(cl, j.job_id, decode=False) for j in submitted if j.t_settled is not None}
    gas = gas_by_job(c)
    runs = head_runs(c)
    fees = sum(r.fee for r in results.values())
    paid = sum(sum(r.payouts.values()) + sum(v.paid for v in r.settlement.verifiers) for r in results.values())
    refunds = sum(r.refund for r in results.values())
    slashed = sum(sum(r.slashes.values()) for r in results.values())
    burned = sum(r.settlement.burned for r in results.values())  # the slashed stake no verifier got
    unanimous = [jid for jid, r in results.items() if r.outcome == "agreed"
                 and len(r.winners) == len(r.plan.replicas)]
    expected_runs = {(j.job_id, rep) for j in submitted for rep in range(len(j.plan.replicas))}
    settled_times = [j.t_settled for j in submitted if j.t_settled is not None]
    span = (max(settled_times) - min(j.t_submit for j in jobs)) if settled_times else None
    by_kind = {}
    for kind in sorted({j.kind for j in jobs}):
        mine = [j for j in submitted if j.kind == kind]
        by_kind[kind] = {
            "jobs": len([j for j in jobs if j.kind == kind]), "settled": sum(j.t_settled is not None for j in mine),
            "first_token_s": _stats([j.t_first - j.t_submit for j in mine if j.t_first is not None]),
            "settle_s": _stats([j.t_settled - j.t_submit for j in mine if j.t_settled is not None]),
            "gas": _stats([float(gas[j.job_id]) for j in mine if j.job_id in gas])}
    checks = {
        "all_submitted": len(submitted) == len(jobs),
        "all_settled": len(results) == len(jobs),
        "all_agreed_unanimously": len(unanimous) == len(jobs),
        "no_replica_lost": all(runs[k] >= 1 for k in expected_runs),
        "no_replica_run_twice": all(v == 1 for v in runs.values()) and set(runs) <= expected_runs,
        "fees_conserved": paid + refunds == fees + slashed - burned
                          and sum(after["earnings"].values()) - sum(before["earnings"].values()) == paid
                          and sum(after["credits"].values()) - sum(before["credits"].values()) == refunds,
        "contracts_hold_the_fees": after["contracts_wei"] - before["contracts_wei"] == fees,
        "stake_conserved": sum(after["stakes"].values()) + slashed == sum(before["stakes"].values()),
    }
    return {
        "bench": "load", "jobs": len(jobs), "rate_per_s": args.rate, "requesters": len(requesters),
        "tokens_per_text_job": args.tokens, "mix": args.mix,
        "nodes": {n.address: {"model": n.model, "span": list(n.span)} for n in c.nodes},
        "jobs_per_minute": round(60 * len(results) / span, 2) if span else None,
        "submit_s": _stats([j.t_submitted - j.t_submit for j in submitted]),
        "first_token_s": _stats([j.t_first - j.t_submit for j in submitted if j.t_first is not None]),
        "settle_s": _stats([j.t_settled - j.t_submit for j in submitted if j.t_settled is not None]),
        "gas": {"per_job_mean": round(statistics.mean(gas.values())) if gas else None,
                **_stats([float(v) for v in gas.values()])},
        "by_kind": by_kind, "cpu": cpu, "checks": checks, "all_checks_pass": all(checks.values()),
        "wei": {"fees": str(fees), "paid_to_nodes": str(paid), "credited_to_requesters": str(refunds),
                "slashed": str(slashed), "burned": str(burned)},
        "outcomes": dict(Counter(f"{r.outcome}, {len(r.winners)}/{len(r.plan.replicas)} replicas paid, "
                                 f"{len(r.reveals)} revealed" for r in results.values())),
        "errors": [{"kind": j.kind, "at_s": j.at_s, "error": j.error} for j in jobs if j.error][:20],
        "replicas_run": sum(runs.values()), "replicas_planned": len(expected_runs),
    }
