"""``tessera operator``: register a node, manage its stake, withdraw, show status.

``operator run`` (the worker itself) lives in :mod:`tessera.cli.operator_run`.
"""

from __future__ import annotations

import importlib
import json
import time

import click

from proto.errors import ConfigError
from tessera.cli.checks import check_endpoint, require_model
from tessera.cli.options import account_options, eth_to_wei, make_client, rpc_options
from tessera.cli.present import wide_console
from tessera.units import fmt_eth

DTYPE_BITS = {"fp32": 1, "bf16": 2, "fp16": 4}  # NodeRegistry caps: 1 << dtype
WEIGHT_BITS = {"exact": 8, "int8": 16}  # NodeRegistry.CAP_EXACT, CAP_INT8


class _Operator(click.Group):
    """The operator group; ``run`` (pydantic, its flags generated from WorkerConfig) is imported
    only when it is asked for, so `tessera operator --help` stays fast."""

    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), "run"])

    def get_command(self, ctx, name):
        if name == "run":
            return importlib.import_module("tessera.cli.operator_run").run
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(n, "Serve this node's span: jobs on chain (--config node.toml) or a static plan." if n == "run"
                 else self.get_command(ctx, n).get_short_help_str(60)) for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_Operator)
def operator() -> None:
    """Register, stake, run and withdraw as a node operator.

    \b
    Examples:
      tessera operator register --key mynode --model smollm2-135m --stake 1.5 --endpoint 203.0.113.7:50051
      tessera operator run --config node.toml
      tessera operator status --model smollm2-135m
    """


def _parse_blocks(spec: str) -> tuple[int, int]:
    try:
        a, b = spec.split(":")
        return int(a), int(b)
    except ValueError:
        raise click.BadParameter(f"{spec!r} is not START:END (half-open, e.g. 0:15)") from None


def _advise(client, model: str, max_blocks: int | None) -> tuple[int, int]:
    try:
        advise = importlib.import_module("router.advise")
    except ModuleNotFoundError:
        raise ConfigError("no router advice available in this build; pass --blocks START:END") from None
    num_blocks = require_model(client, model).num_blocks
    return advise.suggest_span(client.list_nodes(model), num_blocks, max_blocks)


@operator.command()
@rpc_options
@account_options
@click.option("--model", required=True, help="Model as registered on chain: NAME, or 0xPUBLISHER/NAME.")
@click.option("--blocks", default=None, help="Span START:END, half-open (default: ask the router for advice).")
@click.option("--max-blocks", type=int, default=None, help="With advice: most blocks this node can hold.")
@click.option("--stake", required=True, help="Stake to lock, ETH.")
@click.option("--endpoint", required=True, help="HOST:PORT of this node's gRPC service.")
@click.option("--throughput", type=int, default=0, help="Advertised block-tokens per second.")
@click.option("--price", "price_wei", type=click.IntRange(0, 2**80 - 1), default=0,
              help="Wei per block per output token; jobs must pay at least this (JobMarket.feeFloor).")
@click.option("--dtypes", default="fp32,bf16,fp16", show_default=True,
              help="Activation dtype classes this node runs (comma list of fp32, bf16, fp16).")
@click.option("--weights", "weight_modes", default="exact,int8", show_default=True,
              help="Weights this node runs: exact (fp32), int8 (int8-mixed), or both.")
@click.option("--payout", default=None, help="Address receiving stake and earnings (default: the node key).")
def register(rpc_url, chain_kind, key, account_index, model, blocks, max_blocks, stake, endpoint, throughput,
             price_wei, dtypes, weight_modes, payout) -> None:
    """Stake and register this key as a node serving blocks of MODEL.

    \b
    Examples:
      tessera operator register --key mynode --model smollm2-135m --blocks 0:15 --stake 1.5 \\
          --endpoint 203.0.113.7:50051 --price 1000000000
      tessera operator register --account 4 --model smollm2-135m --stake 1 --endpoint 127.0.0.1:50051
    """
    caps = _caps(dtypes, DTYPE_BITS, "--dtypes") | _caps(weight_modes, WEIGHT_BITS, "--weights")
    check_endpoint(endpoint)
    c = make_client(rpc_url, chain_kind, key, account_index)
    start, end = _parse_blocks(blocks) if blocks else _advise(c, model, max_blocks)
    if not blocks:
        click.echo(f"no --blocks given: taking the router's advice, blocks [{start}, {end}) "
                   "(`tessera router advise --model M` shows why)", err=True)
    rec = c.register_node(model, start, end, endpoint, eth_to_wei(stake), throughput, price_wei, payout, caps)
    click.echo(f"registered {rec.address}: {model} blocks [{rec.start}, {rec.end}), stake {fmt_eth(rec.stake)}, "
               f"price {price_wei} wei per block per token")


def _caps(spec: str, bits: dict[str, int], flag: str) -> int:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    bad = [n for n in names if n not in bits]
    if bad or not names:
        raise click.BadParameter(f"{spec!r}: use a comma list of {', '.join(bits)}", param_hint=flag)
    return sum(bits[n] for n in set(names))


@operator.command("set-payout")
@rpc_options
@account_options
@click.argument("address")
def set_payout(rpc_url, chain_kind, key, account_index, address) -> None:
    """Pay this node's stake and earnings to ADDRESS from now on (e.g. when the old one refuses ETH).

    \b
    Examples:
      tessera operator set-payout 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 --key mynode
    """
    c = make_client(rpc_url, chain_kind, key, account_index)
    c.set_payout(address)
    click.echo(f"payout of {c.address} is now {c.get_node().payout}")


@operator.command("stake-add")
@rpc_options
@account_options
@click.argument("amount")
def stake_add(rpc_url, chain_kind, key, account_index, amount) -> None:
    """Add AMOUNT ETH to this node's stake.

    \b
    Example:
      tessera operator stake-add 0.5 --key mynode
    """
    wei = eth_to_wei(amount)
    if wei <= 0:
        raise click.BadParameter(f"{amount!r} adds nothing; give a positive amount of ETH", param_hint="AMOUNT")
    c = make_client(rpc_url, chain_kind, key, account_index)
    c.add_stake(wei)
    click.echo(f"stake is now {fmt_eth(c.get_node().stake)}")


@operator.command()
@rpc_options
@account_options
def unbond(rpc_url, chain_kind, key, account_index) -> None:
    """Leave the active set now; stake is withdrawable after the unbonding period.

    \b
    Examples:
      tessera operator unbond --key mynode
      tessera chain time-travel 604800   # devnet: pass the unbonding period
    """
    c = make_client(rpc_url, chain_kind, key, account_index)
    at = c.request_unbond()
    click.echo(f"unbonding; stake withdrawable from {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(at))}")


@operator.command()
@rpc_options
@account_options
@click.option("--node", default=None, help="Node address (default: this key). Funds go to its payout address.")
def withdraw(rpc_url, chain_kind, key, account_index, node) -> None:
    """Withdraw earnings, and the stake once unbonded, to the payout address.

    \b
    Examples:
      tessera operator withdraw --key mynode
    """
    c = make_client(rpc_url, chain_kind, key, account_index)
    rec = c.get_node(node)
    if rec is None:
        raise ConfigError("this key is not a registered node; pass --node or register first")
    if rec.earnings:
        c.withdraw_earnings(rec.address)
        click.echo(f"withdrew earnings {fmt_eth(rec.earnings)} to {rec.payout}")
    if rec.status == "unbonding":
        c.withdraw_stake(rec.address)  # raises NodeStillBonded with the unlock time if early
        click.echo(f"withdrew stake {fmt_eth(rec.stake)} to {rec.payout}")
    elif not rec.earnings:
        click.echo("nothing to withdraw (stake needs `tessera operator unbond` first)")


@operator.command()
@rpc_options
@account_options
@click.option("--node", default=None, help="Node address (default: this key).")
@click.option("--model", default=None, help="Show every node of this model instead.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(rpc_url, chain_kind, key, account_index, node, model, as_json) -> None:
    """Stake, span, reputation, earnings and unbonding time of a node (or all nodes of a model).

    \b
    Examples:
      tessera operator status --key mynode
      tessera operator status --model smollm2-135m --json
    """
    c = make_client(rpc_url, chain_kind, key, account_index, required=node is None and model is None)
    if model:
        require_model(c, model)
    recs = c.list_nodes(model) if model else [r for r in [c.get_node(node)] if r]
    rows = [{"node": r.address, "status": r.status, "start": r.start, "end": r.end, "stake_wei": r.stake,
             "reputation": r.reputation, "earnings_wei": r.earnings, "unbond_at": r.unbond_at,
             "endpoint": r.endpoint, "throughput": r.throughput, "price_wei": r.price, "payout": r.payout}
            for r in recs]
    if as_json:
        click.echo(json.dumps({"nodes": rows}))
        return
    if not rows:
        if model:
            click.echo(f"model {model} has no registered nodes")
            return
        raise click.ClickException(f"{node or c.address} is not a registered node; register it with "
                                   "`tessera operator register`")

    from rich.table import Table  # lazy: rich only for the table

    t = Table("node", "status", "span", "stake", "reputation", "earnings", "unbonding until", "endpoint")
    for r in rows:
        until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["unbond_at"])) if r["unbond_at"] else "-"
        t.add_row(r["node"], r["status"], f"[{r['start']}, {r['end']})", fmt_eth(r["stake_wei"]),
                  f"{r['reputation']:.4f}", fmt_eth(r["earnings_wei"]), until, r["endpoint"])
    wide_console().print(t)

