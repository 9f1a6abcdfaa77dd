"""Amounts as people read them (no heavy imports: the CLI's --help stays fast)."""

from __future__ import annotations


def fmt_eth(wei: int) -> str:
    """Wei as ETH with 6 significant digits."""
    return f"{wei / 10**18:.6g} ETH"
