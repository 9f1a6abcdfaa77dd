"""``tessera router serve``: plans and advice over HTTP on 127.0.0.1.

Endpoints (JSON in, JSON out)::

    POST /plan    {"model": "m", "replicas": 3, "mode": "latency",
                   "weights": {"price": 0, "stake": 0, "reputation": 0},
                   "snapshot": {...optional inline snapshot...}}
                  -> RoutedPlan.to_json()
    GET  /advise?model=m&max_blocks=8 -> per-block capacity and the suggested span
    GET  /health  -> {"ok": true}

Errors come back as ``{"error": "..."}`` with status 400 (bad request) or 422
(no plan exists: the message says which blocks are short).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from proto.errors import RoutingError, TesseraError
from router.advise import block_capacity, suggest_span
from router.plan import plan_replicas
from router.source import Source
from router.types import Mode, Snapshot, Weights

logger = logging.getLogger(__name__)

MAX_BODY = 16 << 20  # bytes accepted in one POST (an inline snapshot of ~50k nodes)


def advice(snap: Snapshot, max_blocks: int | None) -> dict:
    """The JSON the advise endpoint and ``tessera router advise --json`` print."""
    start, end = suggest_span(snap.nodes, snap.num_blocks, max_blocks)
    return {"model": snap.model, "num_blocks": snap.num_blocks, "capacity": block_capacity(snap.nodes, snap.num_blocks),
            "suggested_span": [start, end]}


def _handler(source: Source):
    class Handler(BaseHTTPRequestHandler):
        server_version = "tessera-router/1"

        def log_message(self, fmt, *args):  # one line per request through logging, not stderr
            logger.info("%s %s", self.address_string(), fmt % args)

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _guard(self, fn) -> None:
            try:
                self._reply(200, fn())
            except RoutingError as exc:
                self._reply(422, {"error": str(exc)})
            except TesseraError as exc:
                self._reply(400, {"error": str(exc)})
            except json.JSONDecodeError as exc:
                self._reply(400, {"error": f"the body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"})
            except KeyError as exc:
                self._reply(400, {"error": f"the request lacks {exc.args[0]!r}; POST /plan takes {{\"model\": M, "
                                           "\"replicas\": R, \"mode\": ..., \"weights\": {...}}, GET /advise ?model=M"})
            except (ValueError, TypeError) as exc:
                self._reply(400, {"error": f"bad request: {exc}"})

        def do_GET(self) -> None:
            url = urlparse(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path == "/health":
                self._reply(200, {"ok": True})
            elif url.path == "/advise":
                self._guard(lambda: advice(source(q["model"]), int(q["max_blocks"]) if "max_blocks" in q else None))
            else:
                self._reply(404, {"error": f"no such endpoint {url.path}; use POST /plan or GET /advise"})

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/plan":
                self._reply(404, {"error": "no such endpoint; use POST /plan"})
                return
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                self._reply(413, {"error": f"request body over {MAX_BODY} bytes"})
                return
            self._guard(lambda: self._plan(json.loads(self.rfile.read(n) or b"{}")))

        def _plan(self, req: dict) -> dict:
            snap = Snapshot.from_json(req["snapshot"]) if "snapshot" in req else source(req["model"])
            w = Weights(**{k: float(v) for k, v in (req.get("weights") or {}).items()})
            rp = plan_replicas(snap, int(req.get("replicas", 1)), Mode.parse(req.get("mode", "latency")), w)
            return rp.to_json()

    return Handler


class RouterServer:
    """A threaded HTTP server bound to 127.0.0.1; ``port=0`` picks a free port."""

    def __init__(self, source: Source, port: int = 0, host: str = "127.0.0.1"):
        self.httpd = ThreadingHTTPServer((host, port), _handler(source))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "RouterServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="router-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
