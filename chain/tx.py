"""Sending transactions from one key: local signing, nonce management, revert decoding.

A :class:`Sender` may be shared by many threads: nonces are handed out under a
lock from a local counter (initialised from the chain's pending count and
re-read after a failed send), so concurrent sends from one key neither collide
nor leave gaps.
"""

from __future__ import annotations

import ast
import logging
import threading
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import TxReceipt

from chain.abi import decode_revert
from proto.errors import ChainError

logger = logging.getLogger(__name__)


def _revert_data(exc: Exception) -> Any:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    return data


def _tester_revert_data(exc: Exception) -> bytes | None:
    """Raw revert bytes from the in-process chain (eth-tester re-raises them as text)."""
    if type(exc).__name__ != "TransactionFailed":
        return None
    for e in (exc.__context__, exc):
        arg = e.args[0] if e is not None and e.args else None
        if isinstance(arg, Exception) and arg.args:
            arg = arg.args[0]
        if isinstance(arg, bytes):
            return arg
    text = str(exc.args[0]) if exc.args else ""
    if text.startswith("execution reverted: b"):
        return ast.literal_eval(text.removeprefix("execution reverted: "))
    return b""


def call_or_raise(fn, **tx: Any) -> Any:
    """``fn.call(tx)`` with custom errors decoded into ContractError."""
    try:
        return fn.call(tx) if tx else fn.call()
    except ContractLogicError as exc:
        raise decode_revert(_revert_data(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the embedded chain's reverts
        data = _tester_revert_data(exc)
        if data is None:
            raise
        raise decode_revert(data) from None


class Sender:
    """Signs and sends contract calls for one account, safely from many threads."""

    def __init__(self, w3: Web3, account: LocalAccount, gas_margin: float = 1.25, receipt_timeout_s: float = 120):
        self.w3 = w3
        self.account = account
        self.gas_margin = gas_margin  # multiplier on the estimate
        self.receipt_timeout_s = receipt_timeout_s
        self._lock = threading.Lock()
        self._nonce: int | None = None
        self._embedded = type(w3.provider).__name__ == "EthereumTesterProvider"

    @property
    def address(self) -> str:
        return self.account.address

    def _next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
        n = self._nonce
        self._nonce += 1
        return n

    def estimate(self, fn, value: int = 0) -> int:
        """Gas estimate against the pending block (where the transaction will run: a call that needs
        a later block than the latest one, such as a verifier draw, estimates as it will execute);
        a revert raises the decoded ContractError before anything is sent."""
        try:
            if self._embedded:  # py-evm estimates on its pending state and takes no block argument
                return fn.estimate_gas({"from": self.address, "value": value})
            return fn.estimate_gas({"from": self.address, "value": value}, "pending")
        except ContractLogicError as exc:
            raise decode_revert(_revert_data(exc)) from None
        except Exception as exc:  # noqa: BLE001
            data = _tester_revert_data(exc)
            if data is not None:
                raise decode_revert(data) from None
            if not isinstance(exc, Web3RPCError):
                raise
            msg = exc.rpc_response.get("error", {}).get("message", str(exc)) if exc.rpc_response else str(exc)
            raise ChainError(f"the node rejected {self.address}'s transaction: {msg}; "
                             "fund the account or lower the amount") from None

    def send(self, fn, value: int = 0, gas: int | None = None) -> TxReceipt:
        """Send ``fn`` with ``value`` wei; wait for the receipt; raise a decoded error on revert."""
        gas = gas or int(self.estimate(fn, value) * self.gas_margin) + 10_000
        with self._lock:
            nonce = self._next_nonce()
            tx = fn.build_transaction({"from": self.address, "value": value, "gas": gas, "nonce": nonce})
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except (Web3RPCError, ValueError) as exc:
                self._nonce = None  # re-read from the chain next time
                raise ChainError(f"the node refused the transaction ({exc}); check the account's balance") from None
        receipt = self._receipt(tx_hash)
        if receipt["status"] != 1:
            self._raise_for_failed(tx, receipt)
        logger.debug("%s mined in block %d, gas %d", getattr(fn, "fn_name", "constructor"), receipt["blockNumber"], receipt["gasUsed"])
        return receipt

    def _receipt(self, tx_hash) -> TxReceipt:
        """The receipt; devnets that mine on send have it at once, others are polled."""
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.receipt_timeout_s)

    def _raise_for_failed(self, tx: dict, receipt: TxReceipt) -> None:
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)
        except ContractLogicError as exc:
            raise decode_revert(_revert_data(exc)) from None
        except Exception as exc:  # noqa: BLE001
            data = _tester_revert_data(exc)
            if data is None:
                raise
            raise decode_revert(data) from None
        raise ChainError(f"transaction {receipt['transactionHash'].hex()} reverted (out of gas?)")
