"""How the job commands show a finalized (or pending) job; the data comes from the chain."""

from __future__ import annotations

from collections.abc import Callable

import click

from tessera.units import fmt_eth

NO_MAJORITY_EXIT = 4  # exit status of `job submit --wait` / `job result` when nobody was paid (refund)
PENDING_EXIT = 3  # exit status of `job result` while the job is open or disputed


def show_result(res, echo: Callable[[str], None] = click.echo) -> None:
    """Output, how it was settled, each replica's verdict, the verifiers' attestations and what
    JobFinalized credited and slashed."""
    if res.outcome == "pending":
        echo(f"job {res.job_id}: not finalized yet ({res.status or 'open'}; reveals so far: {len(res.reveals)})")
        return
    n = len(res.plan.replicas)
    if res.outcome == "refunded":
        echo(f"job {res.job_id}: nobody paid: {res.reason}; refunded {fmt_eth(res.refund)} to the requester")
    else:
        how = {"agreed": "agree", "verified": "were found honest by the verifiers",
               "unverified": "revealed outputs and were paid UNVERIFIED (they disagree and no verifier could "
                             "be drawn; the output shown is the lowest replica's)"}[res.outcome]
        echo(f"output: {res.readable!r}")
        echo(f"{len(res.winners)}/{n} replicas {how} (replicas {list(res.winners)}), "
             f"output hash {res.output_hash[:18]}...")
    for v in res.replicas():
        line = f"  replica {v.replica}: {v.verdict}"
        if v.output_hash:
            line += f"  {v.output_hash[:18]}..."
        echo(line + (f"  ({v.detail})" if v.detail else ""))
    s = res.settlement
    if s.verifiers:
        said = {a.verifier: a.verdicts for a in res.attestations if a.attested}
        echo("verifiers (drawn by the contract):")
        for v in s.verifiers:
            verdicts = said.get(v.node)
            echo(f"  {v.node}  {v.outcome}  +{fmt_eth(v.paid)}"
                 + (f"  verdicts {list(verdicts)}" if verdicts is not None else "  did not attest"))
    if res.payouts:
        echo("payouts:")
        for node, wei in res.payouts.items():
            echo(f"  {node}  +{fmt_eth(wei)}")
    for node, wei in res.slashes.items():
        echo(f"slashed {node}: {fmt_eth(wei)} of stake ({'burned' if s.burned else 'to the verifiers'})")
    if res.refund:
        echo(f"requester credited {fmt_eth(res.refund)} (withdraw it with JobMarket.withdraw)")
    echo(f"finalized in tx {res.finalize_tx}")
