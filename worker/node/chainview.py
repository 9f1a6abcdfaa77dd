"""The chain as a worker's source of truth about job routes.

A route is built from the job's ``JobSubmitted`` event (plan, params; its
hash is stored by the JobMarket, so the event cannot be forged) and the
planned nodes' endpoints in the NodeRegistry. Routes are cached: a job's plan
never changes once submitted.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from chain.client import TesseraChain
from chain.records import JobRequest
from proto.errors import ChainError, ProtocolError
from proto.types import JobId, ModelId
from worker.node.payload import eos_token_id
from worker.planview import GenParams, HopRoute, JobRoute

logger = logging.getLogger(__name__)


class ChainPlanView:
    """PlanView over the JobMarket for one model (``model_id``: its chain id, publisher and name)."""

    def __init__(self, chain: TesseraChain, manifest, model_dir: str | Path, model_id: ModelId):
        self.chain = chain
        self.manifest = manifest
        self.model_id = model_id
        self.eos = eos_token_id(model_dir) if manifest.kind == "causal-lm" else None
        self._routes: dict[int, JobRoute] = {}
        self._requests: dict[int, JobRequest] = {}
        self._endpoints: dict[str, str] = {}
        self._lock = threading.Lock()

    def add_request(self, req: JobRequest) -> JobRoute:
        """Remember a request seen in an event (replacing one a reorg removed); returns its route."""
        with self._lock:
            if self._requests.get(int(req.job_id), req) != req:
                self._routes.pop(int(req.job_id), None)
            self._requests[int(req.job_id)] = req
        return self.route(req.job_id)

    def request(self, job_id: JobId) -> JobRequest:
        with self._lock:
            req = self._requests.get(int(job_id))
        if req is None:
            try:
                req = self.chain.get_request(int(job_id))
            except ChainError as exc:
                raise ProtocolError(f"job {job_id} is not on chain: {exc}") from exc
            with self._lock:
                self._requests[int(job_id)] = req
        return req

    def route(self, job_id: JobId) -> JobRoute:
        with self._lock:
            cached = self._routes.get(int(job_id))
        if cached is not None:
            return cached
        req = self.request(job_id)
        if req.model_id != self.model_id:
            raise ProtocolError(f"job {job_id} is for another model than {self.manifest.name}")
        plan = req.plan(self.manifest.name, self.manifest.num_blocks)
        replicas = tuple(tuple(HopRoute(h.node, self._endpoint(h.node), h.start, h.end) for h in rep.hops)
                         for rep in plan.replicas)
        params = GenParams(max_tokens=req.max_tokens, temperature_milli=round(req.temperature * 1000),
                           seed=req.seed, codec=int(req.codec), eos_token_id=self.eos)
        route = JobRoute(JobId(int(job_id)), self.manifest.name, self.manifest.num_blocks, replicas, params,
                         kind=self.manifest.kind)
        with self._lock:
            self._routes[int(job_id)] = route
        return route

    def _endpoint(self, node: str) -> str:
        ep = self._endpoints.get(node)
        if ep is None:
            rec = self.chain.get_node(node)
            if rec is None:
                raise ProtocolError(f"node {node} of the plan is not registered")
            ep = self._endpoints[node] = rec.endpoint
        return ep
