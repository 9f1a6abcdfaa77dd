"""The network explorer: ``GET /explorer`` (one page) over ``/api/network``, ``/api/jobs``,
``/api/jobs/{id}`` and ``/api/live`` (server-sent events on each new block).

Everything shown is read from the chain (NodeRegistry records, JobSubmitted and
JobFinalized events) plus a gRPC ping of each node for liveness; nothing is
recomputed here that the contracts already decided.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from chain.client import TesseraChain
from proto.errors import TesseraError
from router.advise import block_capacity
from router.view import grpc_prober
from tessera import requester
from tessera.joblist import from_block, list_jobs

PAGE = Path(__file__).with_name("static") / "explorer.html"
CACHE_S = 2.0  # how long a network or jobs answer is reused, seconds
LIVE_MAX_S = 600.0  # one live-updates connection lasts at most this long (the browser reconnects), seconds


class Explorer:
    """Cached views of a deployment for the page."""

    def __init__(self, client: TesseraChain, probe_timeout_s: float = 1.0):
        self.client = client
        self.probe = grpc_prober(probe_timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="explorer-probe")
        self._cache: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def _cached(self, key: str, make):
        with self._lock:
            hit = self._cache.get(key)
            if hit and time.monotonic() - hit[0] < CACHE_S:
                return hit[1]
        value = make()
        with self._lock:
            self._cache[key] = (time.monotonic(), value)
        return value

    def model_names(self) -> list[str]:
        logs = self.client.models.events.ModelRegistered().get_logs(from_block=from_block(self.client))
        return sorted({e["args"]["name"] for e in logs})

    def _alive(self, endpoint: str) -> float | None:
        try:
            return round(self.probe(endpoint).latency_ms, 2)
        except Exception:  # noqa: BLE001 - any failure to answer is "down"
            return None

    def network(self) -> dict:
        return self._cached("network", self._network)

    def _network(self) -> dict:
        models = []
        for name in self.model_names():
            m = self.client.get_model(name)
            nodes = self.client.list_nodes(name)
            pings = list(self._pool.map(self._alive, [n.endpoint for n in nodes]))
            rows = [{"address": n.address, "status": n.status, "start": n.start, "end": n.end, "stake_wei": str(n.stake),
                     "reputation": round(n.reputation, 4), "earnings_wei": str(n.earnings), "endpoint": n.endpoint,
                     "price_wei": str(n.price), "throughput": n.throughput, "alive": ms is not None, "ping_ms": ms,
                     "unbond_at": n.unbond_at} for n, ms in zip(nodes, pings)]
            live = [n for n, ms in zip(nodes, pings) if ms is not None]
            models.append({"name": name, "num_blocks": m.num_blocks, "deprecated": m.deprecated,
                           "coverage": block_capacity(live, m.num_blocks), "nodes": rows})
        return {"chain_id": self.client.deployment.chain_id, "block": self.client.w3.eth.block_number,
                "job_market": self.client.deployment.job_market, "models": models}

    def jobs(self, limit: int = 50) -> list[dict]:
        return self._cached(f"jobs{limit}", lambda: self._jobs(limit))

    def _jobs(self, limit: int) -> list[dict]:
        return list_jobs(self.client, limit)

    def job(self, job_id: int) -> dict:
        res = requester.result(self.client, job_id)
        p = requester.progress(self.client, job_id)
        out = res.to_json()
        out["plan"] = [[{"node": h.node, "start": h.start, "end": h.end} for h in rep.hops] for rep in res.plan.replicas]
        out["committed"], out["revealed"] = p.committed, p.revealed
        return out


def build(ex: Explorer) -> APIRouter:
    api = APIRouter()

    @api.get("/explorer", include_in_schema=False)
    def page():
        return FileResponse(PAGE, media_type="text/html")

    @api.get("/api/network")
    def network():
        return ex.network()

    @api.get("/api/jobs")
    def jobs(limit: int = 50):
        return ex.jobs(max(1, min(limit, 500)))

    @api.get("/api/jobs/{job_id}")
    def job(job_id: int):
        try:
            return ex.job(job_id)
        except TesseraError as exc:
            return JSONResponse({"error": str(exc)}, 404)

    @api.get("/api/live")
    async def live():
        async def ticks():
            last, t_end = -1, time.monotonic() + LIVE_MAX_S
            while time.monotonic() < t_end:
                block = await asyncio.to_thread(lambda: ex.client.w3.eth.block_number)
                if block != last:
                    last = block
                    yield f"data: {{\"block\": {block}}}\n\n"
                await asyncio.sleep(1.0)

        return StreamingResponse(ticks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return api
