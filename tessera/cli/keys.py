"""``tessera keys``: encrypted node keystores (password from a prompt or TESSERA_KEY_PASSWORD)."""

from __future__ import annotations

import json
import os

import click

from tessera.cli.options import read_password


def _password(confirm: bool) -> str:
    # lazy: web3 imported only when this command runs (fast --help)
    from chain.keys import PASSWORD_ENV

    pw = os.environ.get(PASSWORD_ENV)
    return pw if pw is not None else read_password("password", confirm)


@click.group()
def keys() -> None:
    """Create, import and list encrypted node keys."""


@keys.command()
@click.argument("name")
def new(name: str) -> None:
    """Create a new random key NAME.

    \b
    Examples:
      tessera keys new mynode
      echo "$PASSWORD" | tessera keys new mynode   # password from a pipe
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from chain.keys import new_key

    info = new_key(name, _password(confirm=True))
    click.echo(f"{info.name}: {info.address} ({info.path})")


@keys.command(name="import")
@click.argument("name")
@click.option("--private-key", default=None, help="0x private key (prompted if absent).")
@click.option("--dev", "dev_index", type=int, default=None, help="Import well-known dev account N.")
def import_(name: str, private_key: str | None, dev_index: int | None) -> None:
    """Import an existing private key as NAME.

    \b
    Examples:
      tessera keys import mynode --private-key 0x...
      tessera keys import dev4 --dev 4
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from chain.keys import save_key

    if dev_index is not None:
        # lazy: web3 imported only when this command runs (fast --help)
        from chain.devnet import dev_key

        private_key = dev_key(dev_index)
    if private_key is None:
        private_key = click.prompt("private key (0x...)", hide_input=True)
    info = save_key(name, private_key, _password(confirm=True))
    click.echo(f"{info.name}: {info.address} ({info.path})")


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--dev", "dev_count", type=click.IntRange(0, 100), default=0,
              help="Also list the first N devnet accounts (--account N on the CLI).")
@click.option("--private", "show_private", is_flag=True,
              help="With --dev: show the dev accounts' private keys (public knowledge; devnets only).")
def list_(as_json: bool, dev_count: int, show_private: bool) -> None:
    """List stored keys (and optionally devnet accounts).

    \b
    Examples:
      tessera keys list
      tessera keys list --dev 12 --private     # anvil's and Hardhat's well-known dev keys
    """
    # lazy: reading keystores needs no web3 (fast start-up)
    from chain.keys import list_keys

    rows = [{"name": k.name, "address": k.address} for k in list_keys()]
    if dev_count:
        # lazy: eth-account only when dev accounts are derived
        from eth_account import Account

        # lazy: see above
        from chain.devnet import dev_key
    rows += [{"name": f"dev:{i}", "address": Account.from_key(dev_key(i)).address,
              **({"private_key": "0x" + dev_key(i).removeprefix("0x")} if show_private else {})}
             for i in range(dev_count)]
    if show_private and dev_count:
        click.secho("WARNING: dev keys are public; never send real funds to them or use them off a devnet",
                    fg="yellow", err=True)
    if as_json:
        click.echo(json.dumps({"keys": rows}))
        return
    if not rows:
        click.echo("no keys; create one with `tessera keys new NAME`")
    for r in rows:
        click.echo(f"{r['name']:<20} {r['address']}" + (f"  {r['private_key']}" if "private_key" in r else ""))
