"""Click options shared by the chain-facing commands, and their glue to :mod:`chain.connect`."""

from __future__ import annotations

import os
import sys

import click

from proto.errors import ChainError, ConfigError

# Every function below imports chain.connect (web3, about a second) only when a command
# runs, so `tessera <group> --help` stays fast.


def rpc_options(f):
    """--rpc-url and --chain options."""
    f = click.option("--chain", "chain_kind", type=click.Choice(["rpc", "embedded"]), default="rpc",
                     help="rpc: any EVM JSON-RPC endpoint; embedded: py-evm in this process.")(f)
    return click.option("--rpc-url", default=None, envvar="TESSERA_RPC_URL",
                        help="JSON-RPC URL (default: the deployment's, the running devnet's, or localhost:8545).")(f)


def account_options(f):
    """--key NAME|0xPRIVATE and --account N (dev account)."""
    f = click.option("--account", "account_index", type=int, default=None,
                     help="Use well-known dev account N (devnets only).")(f)
    return click.option("--key", default=None, envvar="TESSERA_KEY",
                        help="Keystore name (see `tessera keys list`) or a 0x private key.")(f)


def _prompt_password(key: str) -> str:
    from chain.keys import PASSWORD_ENV, list_keys  # lazy: web3, see above

    if key not in {k.name for k in list_keys()}:  # say so before asking for a password
        raise ConfigError(f"no key named {key!r} in the keystore; `tessera keys list` shows the keys, "
                          f"`tessera keys new {key}` creates it (or pass a 0x private key)")
    pw = os.environ.get(PASSWORD_ENV)
    return pw if pw is not None else read_password(f"password for key {key!r}")


def read_password(prompt: str, confirm: bool = False) -> str:
    """From a prompt on a terminal; from one line of standard input otherwise (no getpass warning)."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise ConfigError("no password on standard input; set TESSERA_KEY_PASSWORD or pipe one line")
        return line.rstrip("\n")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def resolve_account(key, account_index, required: bool = True):
    """The account of --key / --account, prompting for a keystore password if needed."""
    from chain import connect  # lazy: web3, see above

    return connect.resolve_account(key, account_index, required, password=_prompt_password)


def make_client(rpc_url, chain_kind, key, account_index, required: bool = True):
    from chain import connect  # lazy: web3, see above

    return connect.make_client(rpc_url, chain_kind, resolve_account(key, account_index, required))


def resolve_rpc(rpc_url: str | None) -> str:
    from chain import connect  # lazy: web3, see above

    return connect.resolve_rpc(rpc_url)


def make_web3(rpc_url: str | None, chain_kind: str = "rpc"):
    from chain import connect  # lazy: web3, see above

    return connect.make_web3(rpc_url, chain_kind)


def eth_to_wei(value: str) -> int:
    """'1.5' (ETH) -> wei, exactly; a usage error otherwise."""
    from chain import connect  # lazy: web3, see above

    try:
        return connect.eth_to_wei(value)
    except ChainError as exc:
        raise click.BadParameter(str(exc)) from None
