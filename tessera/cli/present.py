"""How the job commands show a finalized (or pending) job; the data comes from the chain."""

from __future__ import annotations

from collections.abc import Callable

import click

from tessera.units import fmt_eth

NO_MAJORITY_EXIT = 4  # exit status of `job submit --wait` / `job result` when the fee was refunded
PENDING_EXIT = 3  # exit status of `job result` while the job is open


def show_result(res, echo: Callable[[str], None] = click.echo) -> None:
    """Output, consensus, each replica's reveal, and what JobFinalized credited and slashed."""
    if res.outcome == "pending":
        echo(f"job {res.job_id}: not finalized yet (reveals so far: {len(res.reveals)})")
        return
    n = len(res.plan.replicas)
    if res.outcome == "refund":
        echo(f"job {res.job_id}: no majority: {res.reason}; refunded {fmt_eth(res.refund)} to the requester")
    else:
        echo(f"output: {res.readable!r}")
        echo(f"consensus: {len(res.winners)}/{n} replicas agree (replicas {list(res.winners)}), "
             f"output hash {res.output_hash[:18]}...")
    for r, h in res.reveals.items():
        mark = "agreed" if r in res.winners else ("OUTVOTED" if res.winners else "")
        echo(f"  replica {r}: {h[:18]}...  {mark}".rstrip())
    if res.payouts:
        echo("payouts:")
        for node, wei in res.payouts.items():
            echo(f"  {node}  +{fmt_eth(wei)}")
    for node, wei in res.slashes.items():
        echo(f"slashed {node}: {fmt_eth(wei)} of stake (its replica committed and never revealed)")
    if res.requester_credit:
        echo(f"requester credited {fmt_eth(res.requester_credit)} (withdraw it with JobMarket.withdraw)")
    echo(f"finalized in tx {res.finalize_tx}")
