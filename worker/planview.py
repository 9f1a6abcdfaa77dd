"""Where a worker learns a job's route: the pluggable source of truth.

In production the chain is that source (the on-chain daemon implements
:class:`PlanView` over JobMarket); tests and benchmarks use
:class:`StaticPlanView`, a table held in memory or read from a JSON file.
A worker uses the route to find its own position, its planned predecessor
(the only sender it accepts) and its successor (where it forwards to).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from proto.errors import ProtocolError
from proto.types import JobId, NodeId

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
                "kind": self.kind, "params": self.params.__dict__,
                "replicas": [[h.__dict__ for h in rep] for rep in self.replicas]}

    @classmethod
    def from_json(cls, d: dict) -> "JobRoute":
        return cls(job_id=JobId(int(d["job_id"])), model=d["model"], num_blocks=int(d["num_blocks"]),
                   kind=d.get("kind", "causal-lm"), params=GenParams(**d.get("params", {})),
                   replicas=tuple(tuple(HopRoute(NodeId(h["node"]), h["endpoint"], int(h["start"]),
                                                 int(h["end"])) for h in rep) for rep in d["replicas"]))


class PlanView(Protocol):
    """Read-only view of job routes."""

    def route(self, job_id: JobId) -> JobRoute:
        """The route of ``job_id``; raise ProtocolError if the job is unknown."""


class StaticPlanView:
    """A fixed table of routes (tests, benchmarks, private deployments)."""

    def __init__(self, routes: list[JobRoute] | None = None):
        self._routes: dict[int, JobRoute] = {}
        for r in routes or []:
            self.add(r)

    def add(self, route: JobRoute) -> None:
        self._routes[int(route.job_id)] = route

    def route(self, job_id: JobId) -> JobRoute:
        try:
            return self._routes[int(job_id)]
        except KeyError:
            raise ProtocolError(f"job {job_id} is not in the plan table; is it on chain yet?") from None

    def to_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps([r.to_json() for r in self._routes.values()], indent=1))

    @classmethod
    def from_file(cls, path: str | Path) -> "StaticPlanView":
        """Read a JSON list of routes (``JobRoute.to_json``); re-read on every lookup miss."""
        view = _FilePlanView(Path(path))
        return view


class _FilePlanView(StaticPlanView):
    """A StaticPlanView backed by a JSON file, re-read when a job is not found."""

    def __init__(self, path: Path):
        super().__init__()
        self._path = path
        self._reload()

    def _reload(self) -> None:
        if self._path.exists():
            for d in json.loads(self._path.read_text()):
                self.add(JobRoute.from_json(d))

    def route(self, job_id: JobId) -> JobRoute:
        if int(job_id) not in self._routes:
            self._reload()
        return super().route(job_id)
