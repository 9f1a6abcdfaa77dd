"""Hosts on one machine: Linux network namespaces joined to this one by capped veth pairs.

:class:`Hosts` (a context manager, root only) makes ``n`` namespaces. Host
``k`` has address ``10.231.k.2`` on its end of a veth pair whose other end, in
this namespace, is ``10.231.k.1``; both ends' egress is capped by a ``tbf``
qdisc at ``rate_mbit``. Nothing is routed between hosts (IP forwarding stays
as it is): a host reaches another only through a process here listening on
its gateway address (the WAN benchmark's delay relays), which reaches every
host directly. Everything it made is removed on exit, on failure too, and at
interpreter exit or SIGTERM if the block never finished: the veth pairs (with
their qdiscs), then the namespaces. :func:`leftovers` lists what remains.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)
PREFIX = "tsrwan"  # every namespace made here starts with this
SUBNET = "10.231"  # host k is 10.231.k.2, its gateway here 10.231.k.1
CMD_TIMEOUT_S = 20.0


class NetnsError(RuntimeError):
    """A namespace command failed (not root, no ``ip``/``tc``, or a name in use)."""


def _run(*cmd: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(cmd)}: {exc}") from exc
    if out.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {out.stderr.strip()[:300]} (the WAN benchmark needs root and iproute2)")
    return out.stdout


def leftovers() -> list[str]:
    """Namespaces made by :class:`Hosts` that still exist."""
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.startswith(PREFIX)]


@dataclass
class Hosts:
    n: int  # hosts
    rate_mbit: float = 100.0  # egress cap of each veth end, Mbit/s
    tag: str = field(default_factory=lambda: f"{os.getpid() % 100000}")
    made: list[str] = field(default_factory=list)  # namespaces made, in order
    links: list[str] = field(default_factory=list)  # veth ends here made, in order

    def name(self, k: int) -> str:
        return f"{PREFIX}{self.tag}x{k}"

    def address(self, k: int) -> str:
        """Host ``k``'s own address."""
        return f"{SUBNET}.{k}.2"

    def gateway(self, k: int) -> str:
        """The address here that host ``k`` reaches (its veth peer)."""
        return f"{SUBNET}.{k}.1"

    def exec(self, k: int) -> list[str]:
        """Command prefix that runs a program inside host ``k``."""
        return ["ip", "netns", "exec", self.name(k)]

    def __enter__(self) -> "Hosts":
        atexit.register(self.close)
        self._old_term = signal.signal(signal.SIGTERM, self._on_term)
        try:
            for k in range(self.n):
                self._make(k)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make(self, k: int) -> None:
        ns, here, there = self.name(k), f"tw{self.tag}h{k}", f"tw{self.tag}n{k}"
        _run("ip", "netns", "add", ns)
        self.made.append(ns)
        _run("ip", "link", "add", here, "type", "veth", "peer", "name", there)
        self.links.append(here)
        _run("ip", "link", "set", there, "netns", ns)
        tbf = ("root", "tbf", "rate", f"{self.rate_mbit}mbit", "burst", "32kbit", "latency", "400ms")
        for cmd in (("ip", "addr", "add", f"{self.gateway(k)}/24", "dev", here), ("ip", "link", "set", here, "up"),
                    ("tc", "qdisc", "add", "dev", here, *tbf)):
            _run(*cmd)
        inside = self.exec(k)
        for cmd in (("ip", "addr", "add", f"{self.address(k)}/24", "dev", there), ("ip", "link", "set", there, "up"),
                    ("ip", "link", "set", "lo", "up"), ("tc", "qdisc", "add", "dev", there, *tbf)):
            _run(*inside, *cmd)

    def close(self) -> None:
        """Remove every veth pair (with its qdiscs) and namespace made; safe to call twice."""
        while self.links:
            link = self.links.pop()
            try:
                _run("ip", "link", "del", link)  # both ends, now (a namespace's own go some time after it)
            except NetnsError as exc:
                logger.warning("could not remove link %s: %s", link, exc)
        while self.made:
            ns = self.made.pop()
            try:
                _run("ip", "netns", "del", ns)
            except NetnsError as exc:
                logger.warning("could not remove namespace %s: %s", ns, exc)
        atexit.unregister(self.close)
        if hasattr(self, "_old_term"):
            signal.signal(signal.SIGTERM, self._old_term)
            del self._old_term

    def _on_term(self, signum, frame) -> None:
        self.close()
        raise SystemExit(128 + signum)
