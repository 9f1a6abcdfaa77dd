"""A node's ``/metrics`` (Prometheus text format) and ``/health`` (JSON) over plain HTTP.

Served beside gRPC on ``[worker] metrics_port`` (default: the gRPC port + 1000) by
the on-chain daemon. ``/health`` answers 200 while the node serves and is active on
chain, 503 otherwise (starting, unbonding, exited, stopping), with the reason.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)


class NodeMetrics:
    """The daemon's counters and gauges, in a registry of their own (one per node)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter("tessera_jobs_planned", "Jobs this node was planned in", registry=r)
        self.heads = Counter("tessera_head_runs", "Replica runs this node drove as head, by result",
                             ["result"], registry=r)
        self.tokens = Counter("tessera_head_tokens", "Tokens (or class ids) produced by replicas this node heads",
                              registry=r)
        self.chain_tx = Counter("tessera_chain_transactions", "Settlement transactions sent, by kind",
                                ["kind"], registry=r)
        self.sessions = Gauge("tessera_sessions_open", "Open ring sessions on this node", registry=r)
        self.tps = Gauge("tessera_stage_tokens_per_second", "Measured decode throughput of this stage", registry=r)
        self.open_jobs = Gauge("tessera_jobs_open", "Jobs in the ledger not yet closed", registry=r)
        self.active = Gauge("tessera_node_active", "1 while the node is active on chain", registry=r)
        self.stake = Gauge("tessera_node_stake_wei", "Stake on chain, wei", registry=r)
        self.earnings = Gauge("tessera_node_earnings_wei", "Withdrawable earnings on chain, wei", registry=r)
        self.reputation = Gauge("tessera_node_reputation", "Reputation on chain (1.0 at registration)", registry=r)
        self.block = Gauge("tessera_chain_block", "Latest chain block seen by the status check", registry=r)


class HealthServer:
    """``GET /metrics`` and ``GET /health`` on ``host:port`` (0 = a free port), in a thread."""

    def __init__(self, metrics: NodeMetrics, host: str, port: int, refresh=lambda: None):
        self.metrics = metrics
        self.refresh = refresh  # updates gauges read at scrape time (sessions, throughput)
        self.state: dict = {"status": "starting", "reason": "loading the model"}
        self.started = time.time()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    outer.refresh()
                    self._send(200, generate_latest(outer.metrics.registry), CONTENT_TYPE_LATEST)
                elif path == "/health":
                    body = outer.health()
                    self._send(200 if body["status"] == "ready" else 503, json.dumps(body).encode(),
                               "application/json")
                else:
                    self._send(404, b'{"error": "no such path; use /metrics or /health"}', "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not worth a log line each
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True).start()

    def set(self, **state) -> None:
        with self._lock:
            self.state = {**self.state, **state}

    def health(self) -> dict:
        with self._lock:
            return {**self.state, "uptime_s": round(time.time() - self.started, 1)}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
