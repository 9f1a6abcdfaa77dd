"""From settings to a connected client: which RPC URL, which account, which deployment.

Used by the operator daemon and by the CLI (whose click options are in
``tessera.cli.options``)."""

from __future__ import annotations

import os
from typing import Callable

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain import devnet
from chain.client import TesseraChain, web3_for
from chain.deploy import load_deployment
from chain.keys import PASSWORD_ENV, load_key
from proto.errors import ChainError

DEFAULT_RPC = "http://127.0.0.1:8545"


def resolve_rpc(rpc_url: str | None) -> str:
    """--rpc-url / TESSERA_RPC_URL, else the running devnet (for local deployments), else the
    deployment's URL, else localhost:8545."""
    if rpc_url:
        return rpc_url
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
        return devnet.embedded_web3()
    url = resolve_rpc(rpc_url)
    w3 = web3_for(url)
    if not w3.is_connected():
        raise ChainError(f"no chain answers at {url}; start one with `tessera chain up` or pass --rpc-url")
    return w3


def resolve_account(key: str | None, account_index: int | None, required: bool = True,
                    password: Callable[[str], str] | None = None) -> LocalAccount | None:
    """A dev account by index, or ``key`` (0x private key or keystore name). A keystore's password
    comes from ``TESSERA_KEY_PASSWORD``, else from ``password(key)``, else it is an error."""
    if account_index is not None:
        return Account.from_key(devnet.dev_key(account_index))
    if key:
        if key.startswith("0x") and len(key) == 66:
            return Account.from_key(key)
        pw = os.environ.get(PASSWORD_ENV)
        if pw is None and password is not None:
            pw = password(key)
        if pw is None:
            raise ChainError(f"key {key!r} is an encrypted keystore; set {PASSWORD_ENV}")
        return load_key(key, pw)
    if required:
        raise ChainError("this command sends transactions; pass --key NAME, --account N (devnet) or set TESSERA_KEY")
    return None


def make_client(rpc_url: str | None, chain_kind: str, account: LocalAccount | None):
    """A client of the deployment in ``TESSERA_DEPLOYMENT`` (or the default file) sending as ``account``."""
    w3 = make_web3(rpc_url, chain_kind)
    return TesseraChain(w3, load_deployment(), account)


def eth_to_wei(value: str) -> int:
    """'1.5' (ETH) -> wei, exactly."""
    try:
        return int(Web3.to_wei(value, "ether"))
    except Exception:  # noqa: BLE001 - web3 raises several types for a bad amount
        raise ChainError(f"{value!r} is not an amount of ETH") from None

