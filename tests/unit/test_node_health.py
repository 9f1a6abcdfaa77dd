"""The operator's view of a running node: /metrics and /health, JSON logs, and the start-up
checks that stop a daemon that could never be reached (endpoint port, a second daemon)."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest

from proto.errors import ConfigError
from tessera.cli.operator_run import JsonFormatter
from worker.node.daemon import check_endpoint
from worker.node.health import HealthServer, NodeMetrics
from worker.node.state import lock


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_health_is_503_until_ready_and_metrics_are_prometheus_text():
    m = NodeMetrics()
    srv = HealthServer(m, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{srv.port}"
        code, body = _get(base + "/health")
        assert code == 503 and json.loads(body)["status"] == "starting"
        srv.set(status="ready", reason="", node="0xabc")
        code, body = _get(base + "/health")
        assert code == 200 and json.loads(body)["node"] == "0xabc"
        m.jobs.inc()
        m.heads.labels("done").inc(2)
        code, body = _get(base + "/metrics")
        text = body.decode()
        assert code == 200 and "tessera_jobs_planned_total 1.0" in text
        assert 'tessera_head_runs_total{result="done"} 2.0' in text
        srv.set(status="unbonding", reason="node is unbonding")
        assert _get(base + "/health")[0] == 503
        assert _get(base + "/nope")[0] == 404
    finally:
        srv.close()


def test_a_port_other_than_the_registered_endpoint_is_refused():
    check_endpoint("203.0.113.7:50051", 50051)
    check_endpoint("203.0.113.7:50051", 0)  # 0: the caller binds a free port (tests), nothing to compare
    with pytest.raises(ConfigError, match="--port 50051"):
        check_endpoint("203.0.113.7:50051", 50052)


def test_a_second_daemon_of_the_same_node_is_refused(tmp_path):
    held = lock(tmp_path)
    try:
        with pytest.raises(ConfigError, match="another daemon for this node already runs"):
            lock(tmp_path)
    finally:
        held.close()
    lock(tmp_path).close()  # free again once the first one is gone


def test_json_log_lines_are_one_object_each():
    rec = logging.LogRecord("worker.node.daemon", logging.WARNING, __file__, 1, "job %s: %s", (5, "x"), None)
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "WARNING" and out["msg"] == "job 5: x" and out["logger"] == "worker.node.daemon"


def test_a_wrong_type_in_node_toml_is_one_line_without_a_pydantic_dump(tmp_path):
    from worker.node.config import load

    p = tmp_path / "node.toml"
    p.write_text('[node]\ndev_account = 1\npoll_interval_s = "fast"\n[worker]\nend = "x"\n')
    with pytest.raises(ConfigError) as exc:
        load(p)
    assert "poll_interval_s: input should be a valid number" in str(exc.value) and "https://" not in str(exc.value)
    p.write_text('[node]\ndev_account = 1\n[worker]\nend = "x"\nport = 99999\n')
    with pytest.raises(ConfigError) as exc:
        load(p)
    msg = str(exc.value)
    assert "end: input should be a valid integer" in msg and "port: input should be less than or equal to 65535" in msg
    assert "\n" not in msg and "https://" not in msg
