"""`tessera router plan/advise --snapshot FILE` work offline and print what scripts read."""

from __future__ import annotations

import json

import pytest

from bench.routing import simulate
from proto.types import Plan
from tessera.cli.main import main


@pytest.fixture()
def snap_file(tmp_path):
    p = tmp_path / "net.json"
    p.write_text(json.dumps(simulate(80, 12, seed=7, model="m").to_json()))
    return str(p)


def test_plan_json_is_a_valid_plan(snap_file, capsys):
    assert main(["router", "plan", "--model", "m", "--replicas", "3", "--snapshot", snap_file, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    plan = Plan.from_json(out["plan"])
    plan.validate()
    assert len(plan.replicas) == 3 and out["optimal"] is True
    assert all(r["latency_ms"] > 0 for r in out["replicas"])


def test_plan_text_and_weights(snap_file, capsys):
    assert main(["router", "plan", "--model", "m", "--replicas", "1", "--mode", "price",
                 "--weights", "reputation=1", "--snapshot", snap_file]) == 0
    assert "ms/token" in capsys.readouterr().out


def test_plan_errors_are_friendly(snap_file, capsys):
    assert main(["router", "plan", "--model", "m", "--replicas", "40", "--snapshot", snap_file]) == 1
    err = capsys.readouterr().err
    assert "node-disjoint replica(s) exist, 40 requested" in err and "Traceback" not in err
    assert main(["router", "plan", "--model", "m", "--weights", "speed=1", "--snapshot", snap_file]) == 1
    assert "bad weight" in capsys.readouterr().err


def test_advise_json(snap_file, capsys):
    assert main(["router", "advise", "--model", "m", "--max-blocks", "3", "--snapshot", snap_file, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    s, e = out["suggested_span"]
    assert e - s == 3 and len(out["capacity"]) == 12
    assert min(out["capacity"][s:e]) == min(min(out["capacity"][x : x + 3]) for x in range(10))


def test_plan_adds_standbys_unless_told_not_to(snap_file, capsys):
    assert main(["router", "plan", "--model", "m", "--replicas", "3", "--snapshot", snap_file, "--json"]) == 0
    plan = Plan.from_json(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plan"])
    assert any(rep.standbys for rep in plan.replicas)  # 80 nodes: spares exist
    assert all((s.start, s.end) in {(h.start, h.end) for h in rep.hops[1:]} for rep in plan.replicas
               for s in rep.standbys)  # each backs a span after the head
    assert main(["router", "plan", "--model", "m", "--replicas", "3", "--snapshot", snap_file, "--json",
                 "--no-standbys"]) == 0
    plan = Plan.from_json(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plan"])
    assert not any(rep.standbys for rep in plan.replicas)
