"""The chain as a worker's source of truth about job routes.

A route is built from the job's ``JobSubmitted`` event (plan, params; its
hash is stored by the JobMarket, so the event cannot be forged) and the
planned nodes' endpoints in the NodeRegistry. The daemon's event follower
hands every request in (:meth:`ChainPlanView.add_request`); a hop message
for a job not seen yet costs a chain lookup only if its verified signer is a
registered node of this model, at most once per ``miss_retry_s`` per job, and
scans only the blocks past the last request seen. Caches are bounded, jobs
past their reveal deadline are dropped, and endpoints are re-read every
``nodes_ttl_s``. Signatures are bound to this chain id and JobMarket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path

from chain.client import TesseraChain
from chain.records import JobRequest, NodeRecord
from proto.errors import ChainError, ProtocolError
from proto.types import JobId, ModelId
from worker.node.payload import eos_token_id
from worker.planview import GenParams, HopRoute, JobRoute
from worker.wire import domain_separator, safe

logger = logging.getLogger(__name__)


class ChainPlanView:
    """PlanView over the JobMarket for one model (``model_id``: its chain id, publisher and name)."""

    def __init__(self, chain: TesseraChain, manifest, model_dir: str | Path, model_id: ModelId, *,
                 max_jobs: int = 4096, nodes_ttl_s: float = 30.0, miss_retry_s: float = 2.0,
                 max_scan_blocks: int = 10_000):
        self.chain = chain
        self.manifest = manifest
        self.model_id = model_id
        self.eos = eos_token_id(model_dir) if manifest.kind == "causal-lm" else None
        self.domain = domain_separator(chain.deployment.chain_id, chain.deployment.job_market)
        self.max_jobs, self.nodes_ttl_s, self.miss_retry_s = max_jobs, nodes_ttl_s, miss_retry_s
        self.max_scan_blocks = max_scan_blocks
        self._requests: OrderedDict[int, JobRequest] = OrderedDict()  # bounded, least recently used first
        self._routes: dict[int, tuple[int, JobRoute]] = {}  # job -> (nodes snapshot version, route)
        self._missing: OrderedDict[int, float] = OrderedDict()  # job -> monotonic time of the last failed lookup
        self._nodes: dict[str, NodeRecord] = {}  # lower-case address -> record, this model's nodes
        self._nodes_at = -float("inf")  # monotonic time of the last snapshot
        self._version = 0  # snapshot version
        self._offset = 0.0  # this machine's unix time minus the chain's, seconds
        self._seen_block = chain.deployment.block  # highest block of a request handed in
        self._lock = threading.Lock()
        self._lookup_lock = threading.Lock()  # one chain lookup at a time

    # ------------------------------------------------------------------ requests
    def add_request(self, req: JobRequest) -> JobRoute:
        """Remember a request seen in an event (replacing one a reorg removed); returns its route."""
        with self._lock:
            self._remember(req)
            self._seen_block = max(self._seen_block, req.block)
        return self.route(req.job_id)

    def request(self, job_id: JobId) -> JobRequest:
        """The request of ``job_id``, read from the chain if needed (the daemon's own, trusted calls)."""
        with self._lock:
            req = self._requests.get(int(job_id))
        if req is None:
            try:
                req = self.chain.get_request(int(job_id))
            except ChainError as exc:
                raise ProtocolError(f"job {job_id} is not on chain: {exc}") from exc
            with self._lock:
                self._remember(req)
        return req

    def route(self, job_id: JobId, sender: str | None = None) -> JobRoute:
        """The route of ``job_id``. ``sender``: the verified signer of a hop message asking for it;
        an unknown job then costs a lookup only if the sender is a registered node of this model."""
        job = int(job_id)
        self._refresh_nodes()
        with self._lock:
            cached = self._routes.get(job)
            req = self._requests.get(job)
            if req is not None:
                self._requests.move_to_end(job)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        if req is None:
            req = self.request(job_id) if sender is None else self._lookup(job, sender)
        route = self._build(req)
        with self._lock:
            self._routes[job] = (self._version, route)
        return route

    def _remember(self, req: JobRequest) -> None:
        job = int(req.job_id)
        if self._requests.get(job, req) != req:
            self._routes.pop(job, None)
        self._requests[job] = req
        self._requests.move_to_end(job)
        self._missing.pop(job, None)
        now = time.time() - self._offset  # chain time
        while len(self._requests) > self.max_jobs or (
                self._requests and next(iter(self._requests.values())).reveal_deadline < now):
            old, _ = self._requests.popitem(last=False)
            self._routes.pop(old, None)

    def _lookup(self, job: int, sender: str) -> JobRequest:
        """A job not handed in by the follower yet: scan the blocks past the last request seen."""
        if sender.lower() not in self._nodes:
            raise ProtocolError(f"job {job} is unknown here and {safe(sender, 50)} is not a registered node of "
                                f"{self.manifest.name}")
        with self._lookup_lock:
            with self._lock:
                req = self._requests.get(job)
                missed = self._missing.get(job)
            if req is not None:
                return req
            if missed is not None and time.monotonic() - missed < self.miss_retry_s:
                raise ProtocolError(f"job {job} is not on chain yet; retry in a few seconds")
            latest = self.chain.w3.eth.block_number
            start = max(self._seen_block, latest - self.max_scan_blocks, self.chain.deployment.block)
            logs = self.chain.market.events.JobSubmitted().get_logs(
                from_block=start, to_block=latest, argument_filters={"jobId": job})
            with self._lock:
                if not logs:
                    self._missing[job] = time.monotonic()
                    while len(self._missing) > self.max_jobs:
                        self._missing.popitem(last=False)
                    raise ProtocolError(f"job {job} is not on chain (blocks {start}..{latest}); is it submitted?")
                req = JobRequest.from_event(logs[0]["args"], logs[0]["blockNumber"],
                                            logs[0]["transactionHash"].to_0x_hex())
                self._remember(req)
                return req

    # ------------------------------------------------------------------ routes
    def _build(self, req: JobRequest) -> JobRoute:
        if req.model_id != self.model_id:
            raise ProtocolError(f"job {req.job_id} is for another model than {self.manifest.name}")
        plan = req.plan(self.manifest.name, self.manifest.num_blocks)
        replicas = tuple(tuple(HopRoute(h.node, self._endpoint(h.node), h.start, h.end) for h in rep.hops)
                         for rep in plan.replicas)
        params = GenParams(max_tokens=req.max_tokens, temperature_milli=round(req.temperature * 1000),
                           seed=req.seed, codec=int(req.codec), eos_token_id=self.eos)
        return JobRoute(JobId(int(req.job_id)), self.manifest.name, self.manifest.num_blocks, replicas, params,
                        kind=self.manifest.kind, deadline=req.commit_deadline + self._offset, domain=self.domain)

    def _endpoint(self, node: str) -> str:
        rec = self._nodes.get(node.lower())
        if rec is None:
            rec = self.chain.get_node(node)
            if rec is None:
                raise ProtocolError(f"node {node} of the plan is not registered")
            with self._lock:
                self._nodes[node.lower()] = rec
        return rec.endpoint

    def _refresh_nodes(self) -> None:
        """Re-read this model's nodes (endpoints) and the chain's clock every ``nodes_ttl_s``."""
        if time.monotonic() - self._nodes_at < self.nodes_ttl_s:
            return
        with self._lookup_lock:
            if time.monotonic() - self._nodes_at < self.nodes_ttl_s:
                return
            try:
                nodes = {r.address.lower(): r for r in self.chain.list_nodes(self.model_id)}
                offset = time.time() - self.chain.w3.eth.get_block("latest")["timestamp"]
            except Exception as exc:  # noqa: BLE001 - keep serving from the last snapshot; retry soon
                logger.warning("cannot re-read the nodes of %s: %s", self.manifest.name, exc)
                self._nodes_at = time.monotonic() - self.nodes_ttl_s + 5.0
                return
            with self._lock:
                changed = {k: r.endpoint for k, r in nodes.items()} != {k: r.endpoint for k, r in self._nodes.items()}
                self._nodes, self._offset, self._nodes_at = nodes, offset, time.monotonic()
                self._version += changed
