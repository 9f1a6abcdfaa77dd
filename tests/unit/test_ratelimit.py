"""Per-peer token buckets under a global cap (worker.ratelimit), on a hand-driven clock."""

from __future__ import annotations

import pytest

from worker.ratelimit import PeerBuckets, RequestLimit, peer_host


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("peer, host", [("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"), ("ipv6:[::1]:443", "ipv6:[::1]"),
                                        ("ipv6:[2001:db8::5]:9", "ipv6:[2001:db8::5]"), ("unix:/tmp/s", "unix:/tmp/s")])
def test_a_peer_is_its_host_not_its_port(peer, host):
    assert peer_host(peer) == host


def test_a_bucket_allows_a_burst_then_its_rate():
    clock = Clock()
    b = PeerBuckets(rate=2, burst=3, max_peers=8, clock=clock)
    assert [b.take("a") for _ in range(4)] == [True, True, True, False]
    clock.t += 0.5  # one token back
    assert [b.take("a") for _ in range(2)] == [True, False]
    clock.t += 100  # never more than the burst
    assert [b.take("a") for _ in range(4)] == [True, True, True, False]


def test_the_table_is_bounded_and_forgets_the_least_recent_peer():
    clock = Clock()
    b = PeerBuckets(rate=1, burst=1, max_peers=2, clock=clock)
    assert b.take("a") and b.take("b") and not b.take("a")  # a is now the most recent
    assert b.take("c") and len(b) == 2  # b forgotten, a kept
    assert not b.take("a")
    assert b.take("b")  # back with a full bucket


def test_a_flooding_peer_does_not_spend_the_global_cap():
    clock = Clock()
    lim = RequestLimit("receipt requests", per_s=5, peer_rate=1, peer_burst=2, max_peers=16, clock=clock)
    refusals = [lim.refusal("ipv4:6.6.6.6:1000") for _ in range(50)]
    assert refusals[:2] == [None, None]
    assert all("from one peer and ipv4:6.6.6.6 sent more" in r for r in refusals[2:])
    assert [lim.refusal(f"ipv4:10.0.0.{i}:5") for i in range(3)] == [None, None, None]
    assert "from all peers together" in lim.refusal("ipv4:10.0.0.9:5")  # 5 a second in all
    clock.t += 1
    assert lim.refusal("ipv4:10.0.0.9:6") is None
