"""Where a worker learns a job's route: the pluggable source of truth.

In production the chain is that source (the on-chain daemon implements
:class:`PlanView` over JobMarket); tests and benchmarks use
:class:`StaticPlanView`, a table held in memory or read from a JSON file.
A worker uses the route to find its own position, its planned predecessor
(the only sender it accepts) and its successor (where it forwards to). A view
also names the signing domain (chain id and JobMarket) its routes live in; a
static plan file carries its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from proto.errors import ProtocolError
from proto.types import JobId, NodeId
from worker.wire import ZERO_ADDRESS, domain_separator, safe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HopRoute:
    """One hop of a replica: who serves blocks ``[start, end)`` and where to reach it."""

    node: NodeId  # checksummed address of the node's key
    endpoint: str  # gRPC "host:port"
    start: int  # first block (inclusive)
    end: int  # block after the last (exclusive)


@dataclass(frozen=True)
class GenParams:
    """Generation parameters of a job, as named in its plan."""

    max_tokens: int = 16  # tokens to generate (vision jobs: ignored, one pass)
    temperature_milli: int = 0  # sampling temperature x 1000; 0 = greedy
    seed: int = 0  # uint256 seed of the sampling uniforms
    codec: int = 4  # activation codec id (worker.codec), int8-outlier by default
    block: int = 64  # codec block size, values
    eos_token_id: int | None = None  # generation stops after this token (kept in the output); None = never


@dataclass(frozen=True)
class JobRoute:
    """Everything a hop needs to know about one job."""

    job_id: JobId
    model: str  # model name as registered on chain
    num_blocks: int  # blocks in the whole model
    replicas: tuple[tuple[HopRoute, ...], ...]
    params: GenParams = field(default_factory=GenParams)
    kind: str = "causal-lm"  # "causal-lm" or "classifier"
    deadline: float | None = None  # this machine's unix time, seconds, past which the job cannot commit; None = none
    domain: bytes = domain_separator(0, ZERO_ADDRESS)  # signing domain (worker.wire.domain_separator); set by the view

    def hop(self, replica: int, index: int) -> HopRoute:
        if not 0 <= replica < len(self.replicas):
            raise ProtocolError(f"job {self.job_id} has no replica {replica}")
        hops = self.replicas[replica]
        if not 0 <= index < len(hops):
            raise ProtocolError(f"replica {replica} of job {self.job_id} has no hop {index}")
        return hops[index]

    def position(self, replica: int, node: str) -> int:
        """Index of ``node`` in ``replica``; ProtocolError if it is not planned there."""
        for i, h in enumerate(self.replicas[replica] if 0 <= replica < len(self.replicas) else ()):
            if h.node.lower() == node.lower():
                return i
        raise ProtocolError(f"node {node} is not planned in replica {replica} of job {self.job_id}")

    def to_json(self) -> dict:
        return {"job_id": str(self.job_id), "model": self.model, "num_blocks": self.num_blocks,
                "kind": self.kind, "params": self.params.__dict__, "deadline": self.deadline,
                "replicas": [[h.__dict__ for h in rep] for rep in self.replicas]}

    @classmethod
    def from_json(cls, d: dict) -> "JobRoute":
        return cls(job_id=JobId(int(d["job_id"])), model=d["model"], num_blocks=int(d["num_blocks"]),
                   kind=d.get("kind", "causal-lm"), params=GenParams(**d.get("params", {})),
                   deadline=d.get("deadline"),
                   replicas=tuple(tuple(HopRoute(NodeId(h["node"]), h["endpoint"], int(h["start"]),
                                                 int(h["end"])) for h in rep) for rep in d["replicas"]))


class PlanView(Protocol):
    """Read-only view of job routes in one signing domain."""

    domain: bytes  # worker.wire.domain_separator of the chain id and JobMarket the routes belong to

    def route(self, job_id: JobId, sender: str | None = None) -> JobRoute:
        """The route of ``job_id``; raise ProtocolError if the job is unknown. ``sender``: the verified
        signer of the message that asks, for a view to refuse strangers before any costly lookup."""


class StaticPlanView:
    """A fixed table of routes in one signing domain (tests, benchmarks, private deployments)."""

    def __init__(self, routes: list[JobRoute] | None = None, chain_id: int = 0, market: str = ZERO_ADDRESS):
        self.chain_id, self.market = chain_id, market
        self.domain = domain_separator(chain_id, market)
        self._routes: dict[int, JobRoute] = {}
        for r in routes or []:
            self.add(r)

    def add(self, route: JobRoute) -> None:
        self._routes[int(route.job_id)] = dataclasses.replace(route, domain=self.domain)

    def route(self, job_id: JobId, sender: str | None = None) -> JobRoute:
        try:
            return self._routes[int(job_id)]
        except KeyError:
            raise ProtocolError(f"job {safe(job_id)} is not in the plan table; is it on chain yet?") from None

    def to_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"chain_id": self.chain_id, "market": self.market,
                                          "routes": [r.to_json() for r in self._routes.values()]}, indent=1))

    @classmethod
    def from_file(cls, path: str | Path) -> "StaticPlanView":
        """Read ``{"chain_id", "market", "routes": [JobRoute.to_json...]}``; re-read when the file changes."""
        return _FilePlanView(Path(path))


class _FilePlanView(StaticPlanView):
    """A StaticPlanView backed by a JSON file, re-read on a lookup miss if the file changed since,
    at most every ``min_reload_s``: an unknown job id costs one ``stat``, not a read and parse."""

    def __init__(self, path: Path, min_reload_s: float = 0.2):
        d = json.loads(path.read_text())
        super().__init__(chain_id=int(d["chain_id"]), market=d["market"])
        self._path, self.min_reload_s = path, min_reload_s
        self._stamp: tuple[int, int] | None = None  # (mtime ns, size) of the file last read
        self._checked = 0.0  # monotonic time of the last stat, seconds
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        st = self._path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        d = json.loads(self._path.read_text())
        if domain_separator(int(d["chain_id"]), d["market"]) != self.domain:
            logger.warning("plan file %s changed its signing domain; keeping chain %s JobMarket %s", self._path,
                           self.chain_id, self.market)
        for r in d["routes"]:
            self.add(JobRoute.from_json(r))
        self._stamp = stamp

    def route(self, job_id: JobId, sender: str | None = None) -> JobRoute:
        if int(job_id) not in self._routes:
            with self._lock:
                now = time.monotonic()
                if now - self._checked >= self.min_reload_s:
                    self._checked = now
                    self._reload()
        return super().route(job_id)
