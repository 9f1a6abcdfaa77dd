"""``tessera chain``: start/stop a local anvil devnet, show status, deploy the contracts."""

from __future__ import annotations

import json
import time

import click

from proto import paths
from proto.errors import ChainError
from tessera.cli.options import account_options, eth_to_wei, make_web3, resolve_account, resolve_rpc, rpc_options


@click.group()
def chain() -> None:
    """Start, stop and deploy to a devnet or any EVM chain."""


@chain.command()
@click.option("--port", type=int, default=8545, show_default=True, help="Port on 127.0.0.1 (0 = any free port).")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), default=None,
              help="Load and save chain state in this file (anvil --state; anvil only).")
@click.option("--engine", type=click.Choice(["anvil", "hardhat"]), default="anvil", show_default=True,
              help="anvil (native, starts in well under a second) or Hardhat 3 (Node 22, a few seconds).")
def up(port: int, state_file: str | None, engine: str) -> None:
    """Start a local devnet in the background on 127.0.0.1 (chain id 31337, funded dev accounts).

    \b
    Examples:
      tessera chain up && tessera chain deploy
      tessera chain up --engine hardhat --port 8546
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from chain import devnet

    running = devnet.load_record()
    if running:
        click.echo(f"devnet already running: {running.rpc_url} ({running.engine}, pid {running.pid})")
        return
    if state_file and engine != "anvil":
        raise click.BadParameter("--state works with anvil only", param_hint="--state")
    net = devnet.start(engine, port=port or None, **({"state_file": state_file} if state_file else {}))
    devnet.save_record(net)
    click.echo(f"devnet up: {net.rpc_url} ({engine}, pid {net.pid}, log {net.log_file})")
    _show_dev_accounts(4)
    click.echo("more: `tessera keys list --dev 12 --private`; fund any address: `tessera chain fund ADDRESS 10`")


def _show_dev_accounts(n: int) -> None:
    # lazy: web3 imported only when this command runs (fast --help)
    from eth_account import Account

    # lazy: web3 imported only when this command runs (fast --help)
    from chain.devnet import dev_key

    click.secho("WARNING: these dev keys are public; never send real funds to them or use them off a devnet",
                fg="yellow", err=True)
    for i in range(n):
        key = dev_key(i)
        click.echo(f"  --account {i}: {Account.from_key(key).address}  private key 0x{key.removeprefix('0x')}")


@chain.command()
def down() -> None:
    """Stop the devnet started by `tessera chain up`.

    \b
    Examples:
      tessera chain down
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from chain import devnet

    net = devnet.load_record()
    if not net:
        click.echo("no devnet running")
        return
    devnet.stop_anvil(net)
    devnet.clear_record()
    click.echo(f"devnet stopped (pid {net.pid})")


@chain.command()
@rpc_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(rpc_url: str | None, chain_kind: str, as_json: bool) -> None:
    """Show the devnet, the chain it answers for and the deployment.

    \b
    Examples:
      tessera chain status
      tessera chain status --rpc-url https://rpc.example.org --json
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from chain import devnet
    from chain.deploy import load_deployment

    net = devnet.load_record()
    url = resolve_rpc(rpc_url)
    info: dict = {"devnet_pid": net.pid if net else None, "rpc_url": url}
    try:
        w3 = make_web3(rpc_url, chain_kind)
        info.update(chain_id=w3.eth.chain_id, block=w3.eth.block_number, reachable=True)
    except ChainError:
        info["reachable"] = False
    try:
        dep = load_deployment()
        info["deployment"] = dep.to_json()
        info["deployment_matches"] = info.get("chain_id") == dep.chain_id
    except ChainError:
        info["deployment"] = None
    if as_json:
        click.echo(json.dumps(info))
    else:
        _print_status(net, url, info)
    if not info["reachable"]:
        raise click.ClickException(f"no chain answers at {url}; start one with `tessera chain up` or pass --rpc-url")


def _print_status(net, url: str, info: dict) -> None:
    click.echo(f"devnet:     {f'{net.engine}, pid {net.pid}' if net else 'not started by tessera'}")
    click.echo(f"rpc:        {url} ({'block ' + str(info['block']) if info['reachable'] else 'unreachable'})")
    dep = info["deployment"]
    click.echo(f"deployment: {paths.deployment_file() if dep else 'none'}")
    if dep:
        for k in ("chain_id", "model_registry", "node_registry", "disputes", "job_market", "publisher", "block"):
            click.echo(f"  {k}: {dep[k]}")


@chain.command()
@rpc_options
@account_options
@click.option("--min-stake", default="1", show_default=True, help="Minimum node stake, ETH.")
@click.option("--unbonding", "unbonding_s", type=int, default=7 * 24 * 3600, show_default=True,
              help="Unbonding period, seconds.")
@click.option("--slash", default="0.1", show_default=True, help="Stake taken from a silent committer, ETH.")
@click.option("--max-job-duration", "max_job_s", type=int, default=24 * 3600, show_default=True,
              help="Longest commit+reveal window, seconds.")
@click.option("--min-windows", "min_windows", default="30,60", show_default=True,
              help="Shortest commit and reveal windows a job may ask for, seconds (COMMIT,REVEAL).")
@click.option("--attest-window", "attest_s", type=int, default=3600, show_default=True,
              help="Verifiers' time to attest a dispute, seconds.")
@click.option("--finalize-grace", "grace_s", type=int, default=3600, show_default=True,
              help="Seconds after a stage's deadline before keepers are paid to move a job on.")
@click.option("--verify-bps", type=int, default=1000, show_default=True, help="Verification reserve, bps of the fee.")
@click.option("--keeper-bps", type=int, default=100, show_default=True, help="Keeper reward per stage, bps of the fee.")
@click.option("--verifiers", type=int, default=3, show_default=True, help="Verifiers drawn per dispute (1..8).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Deployment file (default $TESSERA_HOME/deployment.json).")
def deploy(rpc_url, chain_kind, key, account_index, min_stake, unbonding_s, slash, max_job_s, min_windows, attest_s,
           grace_s, verify_bps, keeper_bps, verifiers, out) -> None:
    """Compile if needed and deploy ModelRegistry, NodeRegistry, Disputes and JobMarket. The
    unbonding period must outlast a job's lifetime (max job + attest window + 3 x grace).

    \b
    Examples:
      tessera chain deploy                      # dev account 0 on a devnet
      tessera chain deploy --key deployer --rpc-url https://rpc.example.org --unbonding 604800
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from chain.deploy import DeployParams, save_deployment
    from chain.deploy import deploy as do_deploy

    try:
        min_commit, min_reveal = (int(v) for v in min_windows.split(","))
    except ValueError:
        raise click.BadParameter(f"{min_windows!r} is not COMMIT,REVEAL seconds", param_hint="--min-windows") from None
    params = DeployParams(eth_to_wei(min_stake), unbonding_s, eth_to_wei(slash), max_job_s, min_commit, min_reveal,
                          attest_s, grace_s, verify_bps, keeper_bps, verifiers)
    params.validate()
    w3 = make_web3(rpc_url, chain_kind)
    if key is None and account_index is None:
        account_index = 0  # the devnet's first dev account
    acct = resolve_account(key, account_index)
    dep = do_deploy(w3, acct, params, rpc_url=None if chain_kind == "embedded" else resolve_rpc(rpc_url))
    path = save_deployment(dep, out)
    click.echo(f"deployed on chain {dep.chain_id} at block {dep.block} from {acct.address}; models published by "
               f"{dep.publisher} are named without a prefix; wrote {path}")
    if chain_kind == "embedded":
        click.echo("note: the embedded chain ends with this process; use it from Python for single-process runs")


@chain.command()
@click.argument("address")
@click.argument("eth", default="10")
@rpc_options
@click.option("--from-account", type=int, default=0, show_default=True, help="Dev account that sends the ETH.")
def fund(address, eth, rpc_url, chain_kind, from_account) -> None:
    """Send ETH (default 10) to ADDRESS from a dev account: devnets only.

    \b
    Examples:
      tessera chain fund 0x70997970C51812dc3A010C7d01b50e0d17dc79C8
      tessera chain fund "$(tessera keys list --json | jq -r '.keys[0].address')" 5
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from web3 import Web3

    # lazy: web3 imported only when this command runs (fast --help)
    from chain.devnet import fund as do_fund

    if not Web3.is_address(address):
        raise click.BadParameter(f"{address!r} is not an address (0x and 40 hex digits)", param_hint="ADDRESS")
    wei = eth_to_wei(eth)
    if wei <= 0:
        raise click.BadParameter("give a positive amount of ETH", param_hint="ETH")
    w3 = make_web3(rpc_url, chain_kind)
    tx = do_fund(w3, address, wei, from_account)
    click.echo(f"sent {eth} ETH to {Web3.to_checksum_address(address)} (tx {tx}); balance now "
               f"{Web3.from_wei(w3.eth.get_balance(Web3.to_checksum_address(address)), 'ether')} ETH")


@chain.command("time-travel")
@click.argument("seconds", type=click.IntRange(1, 10 * 365 * 24 * 3600))
@rpc_options
def time_travel(seconds, rpc_url, chain_kind) -> None:
    """Move the devnet's clock SECONDS forward and mine a block: devnets only (anvil, Hardhat).

    Use it to pass an unbonding period or a job's commit/reveal deadlines.

    \b
    Examples:
      tessera chain time-travel 604800     # one week: a default unbonding period
      tessera chain time-travel 421 && tessera job finalize 7
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from chain.devnet import advance_time

    w3 = make_web3(rpc_url, chain_kind)
    before = w3.eth.get_block("latest")["timestamp"]
    try:
        advance_time(w3, seconds)
    except Exception as exc:  # noqa: BLE001 - a non-devnet answers with one of several errors
        raise ChainError(f"this chain does not move its clock on request ({exc}); time travel works on devnets "
                         "(anvil, Hardhat)") from None
    after = w3.eth.get_block("latest")["timestamp"]
    click.echo(f"chain time {_utc(before)} -> {_utc(after)} (block {w3.eth.block_number})")


def _utc(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
