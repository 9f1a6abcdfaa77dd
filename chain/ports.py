"""Loopback ports for processes started later (no web3 here: GPU benchmark machines lack it)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from proto.errors import ChainError


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port handed out now is bound later by another process (a node starts seconds after it is
    registered); an ephemeral port could meanwhile become the local end of any outgoing connection
    (each JSON-RPC call opens one), so the port is drawn from below that range, at random, and
    checked free.
    """
    low = min(_ephemeral_low(), 65536)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, low) if low > 11000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise ChainError("no free loopback port found below the ephemeral range")
