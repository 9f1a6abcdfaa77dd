"""`tessera router serve` answers plans over HTTP on 127.0.0.1 (a real process)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from bench.routing import simulate
from proto.types import Plan

pytestmark = pytest.mark.integration


@pytest.fixture()
def server(tmp_path):
    p = tmp_path / "net.json"
    p.write_text(json.dumps(simulate(60, 16, seed=3, model="m").to_json()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera.cli.main", "router", "serve", "--port", "0", "--snapshot", str(p)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert m, f"router did not start: {line!r}"
        yield m.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_plan_and_advise_round_trip(server):
    status, out = _post(server + "/plan", {"model": "m", "replicas": 2, "mode": "latency", "weights": {"price": 1}})
    assert status == 200
    plan = Plan.from_json(out["plan"])
    plan.validate()
    assert len(plan.replicas) == 2 and len(out["replicas"]) == 2

    status, out = _post(server + "/plan", {"model": "m", "replicas": 50})
    assert status == 422 and "node-disjoint" in out["error"]
    status, out = _post(server + "/plan", {"model": "m", "mode": "fastest"})
    assert status == 400 and "choose one of" in out["error"]

    with urllib.request.urlopen(server + "/advise?model=m&max_blocks=4", timeout=30) as r:
        adv = json.loads(r.read())
    s, e = adv["suggested_span"]
    assert e - s == 4 and len(adv["capacity"]) == 16


def test_errors_say_what_is_wrong_without_python_exception_names(server):
    req = urllib.request.Request(server + "/plan", data=b"{not json", headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30)
        raise AssertionError("a body that is not JSON was accepted")
    except urllib.error.HTTPError as e:
        status, out = e.code, json.loads(e.read())
    assert status == 400 and out["error"].startswith("the body is not JSON") and "JSONDecodeError" not in out["error"]
    status, out = _post(server + "/plan", {"replicas": 2})
    assert status == 400 and "lacks 'model'" in out["error"] and "KeyError" not in out["error"]
    with urllib.request.urlopen(server + "/advise?model=m", timeout=30) as r:  # no max_blocks: the weakest run
        adv = json.loads(r.read())
    s, e = adv["suggested_span"]
    assert min(adv["capacity"][s:e]) == min(adv["capacity"])
