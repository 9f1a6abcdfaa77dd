"""The network view joins registry records with probes, caches them, drops the silent."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from proto.errors import ConfigError
from router.plan import plan_replicas
from router.source import file_source
from router.types import NodeView, Snapshot
from router.view import NetworkView, Probe


@dataclass(frozen=True)
class Rec:  # chain.records.NodeRecord's shape
    address: str
    endpoint: str
    start: int
    end: int
    stake: int = 10**18
    reputation_raw: int = 10**18
    throughput: int = 100
    price: int = 1000
    status: str = "active"


RECS = [
    Rec("0x" + "1" * 40, "a:1", 0, 2),
    Rec("0x" + "2" * 40, "b:1", 0, 2, reputation_raw=2 * 10**18),
    Rec("0x" + "3" * 40, "c:1", 0, 2, status="unbonding"),
]


class FakeProber:
    def __init__(self, down=()):
        self.calls: list[str] = []
        self.down = set(down)

    def __call__(self, endpoint: str) -> Probe | None:
        self.calls.append(endpoint)
        if endpoint in self.down:
            raise ConnectionError("unreachable")
        return Probe(latency_ms=5.0, tokens_per_second=40.0, free_cache_bytes=1 << 20)


def test_records_become_views_and_probes_fill_measurements():
    prober = FakeProber()
    snap = NetworkView(RECS, 2, prober=prober).snapshot("m")
    a, b, c = snap.nodes
    assert (a.model, a.start, a.end, a.price_per_block, a.stake_wei) == ("m", 0, 2, 1000, 10**18)
    assert b.reputation == 2.0
    assert a.latency_ms == 5.0 and a.throughput == 80.0  # 40 tokens/s over 2 blocks
    assert not c.alive and "c:1" not in prober.calls  # unbonding nodes are not probed or planned


def test_probes_are_cached_for_the_ttl():
    now = [0.0]
    prober = FakeProber()
    view = NetworkView(lambda m: RECS, 2, prober=prober, ttl_s=10, clock=lambda: now[0])
    view.snapshot("m")
    view.snapshot("m")
    assert len(prober.calls) == 2
    now[0] = 11.0
    view.snapshot("m")
    assert len(prober.calls) == 4


def test_silent_nodes_drop_out_of_plans():
    snap = NetworkView(RECS, 2, prober=FakeProber(down={"a:1"})).snapshot("m")
    assert [n.alive for n in snap.nodes] == [False, True, False]
    rp = plan_replicas(snap, 1)
    assert rp.plan.replicas[0].hops[0].node == RECS[1].address


def test_snapshot_file_round_trip(tmp_path):
    snap = Snapshot(model="m", num_blocks=2, nodes=(NodeView("0x" + "1" * 40, "a:1", "m", 0, 2),))
    p = tmp_path / "snap.json"
    p.write_text(json.dumps(snap.to_json()))
    assert file_source(p)("m") == snap
    with pytest.raises(ConfigError, match="no model"):
        file_source(p)("other")
    p.write_text(json.dumps({**snap.to_json(), "nodez": []}))
    with pytest.raises(ConfigError, match="unknown field"):
        file_source(p)("m")
