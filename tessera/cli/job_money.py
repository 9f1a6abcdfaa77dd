"""``tessera job balance | withdraw | list | finalize | cancel``: the requester's money path.

A job without a majority (or one whose tail was slashed) credits the requester
inside JobMarket; ``job withdraw`` moves that credit to the wallet. A job ends by
its deadlines: JobMarket has no cancel, and ``job finalize`` settles one after its
reveal deadline (anyone may), refunding the fee when no majority exists.
"""

from __future__ import annotations

import json
import time

import click

from tessera.cli.options import account_options, make_client, rpc_options
from tessera.cli.present import NO_MAJORITY_EXIT, show_result, wide_console
from tessera.units import fmt_eth


def _utc(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


@click.command()
@rpc_options
@account_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def balance(rpc_url, chain_kind, key, account_index, as_json) -> None:
    """This account's wallet balance and its credit in JobMarket (refunds, slashed stake).

    \b
    Example:
      tessera job balance --account 9
    """
    c = make_client(rpc_url, chain_kind, key, account_index)
    wallet, credit = c.balance(), c.credits_of()
    if as_json:
        click.echo(json.dumps({"address": c.address, "wallet_wei": str(wallet), "credit_wei": str(credit)}))
        return
    click.echo(f"{c.address}: wallet {fmt_eth(wallet)}, JobMarket credit {fmt_eth(credit)}")
    if credit:
        click.echo("withdraw the credit with `tessera job withdraw`")


@click.command()
@rpc_options
@account_options
def withdraw(rpc_url, chain_kind, key, account_index) -> None:
    """Move this account's JobMarket credit (refunded fees, slashed stake) to its wallet.

    \b
    Example:
      tessera job withdraw --key alice
    """
    c = make_client(rpc_url, chain_kind, key, account_index)
    credit = c.credits_of()
    if not credit:
        click.echo(f"{c.address} has no credit in JobMarket; nothing to withdraw")
        return
    c.withdraw()
    click.echo(f"withdrew {fmt_eth(credit)} to {c.address}; wallet now {fmt_eth(c.balance())}")


@click.command(name="list")
@rpc_options
@account_options
@click.option("--mine", is_flag=True, help="Only jobs submitted by this account (--key/--account).")
@click.option("--requester", default=None, help="Only jobs submitted by this address.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Newest jobs shown.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_(rpc_url, chain_kind, key, account_index, mine, requester, limit, as_json) -> None:
    """Recent jobs: status, outcome, fee, what nodes were paid and what was refunded.

    \b
    Examples:
      tessera job list
      tessera job list --mine --account 9 --json
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from tessera.joblist import list_jobs

    c = make_client(rpc_url, chain_kind, key, account_index, required=mine)
    rows = list_jobs(c, limit, c.address if mine else requester)
    if as_json:
        click.echo(json.dumps({"jobs": rows}))
        return
    if not rows:
        click.echo("no jobs")
        return
    # lazy: rich only for the table
    from rich.table import Table

    t = Table("job", "model", "status", "outcome", "fee", "paid", "refund", "requester", "reveal deadline")
    for r in rows:
        t.add_row(str(r["job_id"]), r["model"], r["status"], r["outcome"], fmt_eth(int(r["fee_wei"])),
                  fmt_eth(int(r["paid_wei"])), fmt_eth(int(r["refund_wei"])), r["requester"], _utc(r["reveal_deadline"]))
    wide_console().print(t)


@click.command()
@click.argument("job_id", type=int)
@rpc_options
@account_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def finalize(job_id, rpc_url, chain_kind, key, account_index, as_json) -> None:
    """Settle JOB_ID once every replica revealed or its reveal deadline passed (anyone may):
    the majority's nodes are paid, or the fee is credited back to the requester. Exit status 4
    when it ends without a majority.

    \b
    Example:
      tessera job finalize 12 --account 9
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from tessera import requester

    c = make_client(rpc_url, chain_kind, key, account_index)
    if c.get_job(job_id).status != "finalized":
        c.finalize(job_id)
    res = requester.result(c, job_id)
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        show_result(res)
    if res.outcome == "refunded":
        raise click.exceptions.Exit(NO_MAJORITY_EXIT)


@click.command()
@click.argument("job_id", type=int)
@rpc_options
def cancel(job_id, rpc_url, chain_kind) -> None:
    """Not possible: JobMarket has no cancel. A submitted job ends by its deadlines; after the
    reveal deadline `tessera job finalize JOB_ID` settles it, and a job without a majority
    refunds its fee as JobMarket credit (`tessera job withdraw`)."""
    c = make_client(rpc_url, chain_kind, None, None, required=False)
    j = c.get_job(job_id)
    if j.status == "finalized":
        raise click.ClickException(f"job {job_id} is already finalized; `tessera job result {job_id}` shows it")
    raise click.ClickException(
        f"JobMarket has no cancel: the fee of job {job_id} stays in escrow until it settles. Its reveal deadline "
        f"is {_utc(j.reveal_deadline)}; after it, `tessera job finalize {job_id}` settles it (a job without a "
        "majority refunds the fee as credit: `tessera job withdraw`)")
