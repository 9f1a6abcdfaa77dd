"""Shared plumbing of the chain-facing CLI commands: RPC, account and client options."""

from __future__ import annotations

import functools
import os

import click
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from tessera.errors import ChainError

DEFAULT_RPC = "http://127.0.0.1:8545"
ETH = 10**18


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


def resolve_rpc(rpc_url: str | None) -> str:
    """--rpc-url / TESSERA_RPC_URL, else the running devnet (for local deployments), else the
    deployment's URL, else localhost:8545."""
    if rpc_url:
        return rpc_url
    from chain import devnet
    from chain.deploy import load_deployment

    try:
        dep_url = load_deployment().rpc_url
    except ChainError:
        dep_url = None
    net = devnet.load_record()
    if net and (dep_url is None or dep_url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "http://localhost"))):
        return net.rpc_url
    return dep_url or DEFAULT_RPC


def make_web3(rpc_url: str | None, chain_kind: str = "rpc") -> Web3:
    if chain_kind == "embedded":
        from chain.devnet import embedded_web3

        return embedded_web3()
    from chain.client import web3_for

    url = resolve_rpc(rpc_url)
    w3 = web3_for(url)
    if not w3.is_connected():
        raise ChainError(f"no chain answers at {url}; start one with `tessera chain up` or pass --rpc-url")
    return w3


def resolve_account(key: str | None, account_index: int | None, required: bool = True) -> LocalAccount | None:
    """--account N, --key (0x private key or keystore name) or TESSERA_KEY; prompts for a keystore password."""
    if account_index is not None:
        from chain.devnet import dev_key

        return Account.from_key(dev_key(account_index))
    if key:
        if key.startswith("0x") and len(key) == 66:
            return Account.from_key(key)
        from chain.keys import PASSWORD_ENV, load_key

        pw = os.environ.get(PASSWORD_ENV)
        if pw is None:
            pw = click.prompt(f"password for key {key!r}", hide_input=True)
        return load_key(key, pw)
    if required:
        raise ChainError("this command sends transactions; pass --key NAME, --account N (devnet) or set TESSERA_KEY")
    return None


def make_client(rpc_url, chain_kind, key, account_index, required: bool = True):
    from chain.client import TesseraChain
    from chain.deploy import load_deployment

    w3 = make_web3(rpc_url, chain_kind)
    return TesseraChain(w3, load_deployment(), resolve_account(key, account_index, required))


def eth_to_wei(value: str) -> int:
    """'1.5' (ETH) -> wei, exactly."""
    try:
        return int(Web3.to_wei(value, "ether"))
    except Exception:  # noqa: BLE001
        raise click.BadParameter(f"{value!r} is not an amount of ETH") from None


@functools.lru_cache(maxsize=None)
def fmt_eth(wei: int) -> str:
    return f"{wei / ETH:.6g} ETH"
