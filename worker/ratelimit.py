"""Rate limits for requests anyone may send: a token bucket per peer host under one global cap.

A peer is its host address (:func:`peer_host`), not its port: a client gets a
new port with every connection, so a per-port limit would stop nobody. Peers
on one host share a bucket; that includes every process on loopback, which is
one host too (tests give a second peer its own address, 127.0.0.2, through a
relay). Requests a peer's bucket refuses never count against the global cap,
so one peer that floods spends only its own allowance and the others are
still served.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


def peer_host(peer: str) -> str:
    """gRPC's ``context.peer()`` less the port: ``ipv4:1.2.3.4:5678`` -> ``ipv4:1.2.3.4``,
    ``ipv6:[::1]:5678`` -> ``ipv6:[::1]``; anything else (``unix:...``) as it is."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4" or (kind == "ipv6" and rest.startswith("[")):
        return peer.rpartition(":")[0]
    return peer


class PeerBuckets:
    """One token bucket per peer (``rate`` tokens per second, at most ``burst``) in a table of at
    most ``max_peers``; past it the peer seen least recently is forgotten (it returns with a full
    bucket, so eviction can only help the evicted, and the global cap still holds)."""

    def __init__(self, rate: float, burst: float, max_peers: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1 or max_peers < 1:
            raise ValueError("rate > 0, burst >= 1 and max_peers >= 1 are needed")
        self.rate, self.burst, self.max_peers, self.clock = rate, burst, max_peers, clock
        self._peers: OrderedDict[str, tuple[float, float]] = OrderedDict()  # peer -> (tokens, clock time)
        self._lock = threading.Lock()

    def take(self, peer: str) -> bool:
        """Spend one of ``peer``'s tokens; False (nothing spent) when it has none left."""
        with self._lock:
            now = self.clock()
            tokens, at = self._peers.pop(peer, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            ok = tokens >= 1
            self._peers[peer] = (tokens - 1 if ok else tokens, now)
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
            return ok

    def __len__(self) -> int:
        return len(self._peers)


class RequestLimit:
    """At most ``per_s`` requests a second in all, and each peer host its own bucket under that.
    :meth:`refusal` is None when a request may go ahead, else why not (for RESOURCE_EXHAUSTED)."""

    def __init__(self, what: str, per_s: int, peer_rate: float, peer_burst: float, max_peers: int,
                 clock: Callable[[], float] = time.monotonic):
        self.what, self.per_s, self.clock = what, per_s, clock
        self.peers = PeerBuckets(peer_rate, peer_burst, max_peers, clock)
        self._lock = threading.Lock()
        self._window, self._calls = 0, 0  # this second; requests let through in it

    def refusal(self, peer: str) -> str | None:
        host = peer_host(peer)
        if not self.peers.take(host):
            return (f"at most {self.peers.rate:g} {self.what} per second (bursts of {self.peers.burst:g}) from one "
                    f"peer and {host} sent more; retry in a second")
        with self._lock:
            now = int(self.clock())
            if now != self._window:
                self._window, self._calls = now, 0
            if self._calls >= self.per_s:
                return f"at most {self.per_s} {self.what} per second from all peers together; retry in a second"
            self._calls += 1
        return None
