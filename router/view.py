"""The router's view of the network: registry records joined with live probes.

Registry records come from a list or a callable ``records(model)`` (the chain
client's :meth:`chain.client.TesseraChain.list_nodes`); any object with
``node`` (or ``address``), ``endpoint``, ``start``, ``end``, ``stake``,
``reputation`` (float, or ``reputation_raw`` fixed point 1e18),
``throughput``, ``price_per_block`` (or ``price``) and ``active`` (or
``status == "active"``) works.

Probes are an injectable function ``prober(endpoint) -> Probe`` (raise or
return ``None`` when the node does not answer). :func:`grpc_prober` is the real
one over ``tessera.v1.WorkerService`` Ping and Info. Answers are cached per
endpoint for ``ttl_s`` seconds; a node that does not answer is marked not
alive and drops out of plans.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

from proto.channel import open_channel
from proto.tessera.v1 import worker_pb2, worker_pb2_grpc
from proto.types import NodeId
from router.types import NodeView, Snapshot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """What one probe of a worker measured."""

    latency_ms: float  # Ping round trip, ms
    tokens_per_second: float = 0.0  # Info: measured decode tokens/s of the whole stage (0 = unknown)
    free_cache_bytes: int | None = None  # Info: session memory still free, bytes
    bandwidth: float | None = None  # bytes/s into the node, if the prober measures it


Prober = Callable[[str], "Probe | None"]
Records = Callable[[str], Iterable] | Iterable


def _is_active(r) -> bool:
    if hasattr(r, "active"):
        return bool(r.active)
    return getattr(r, "status", "active") == "active"


def _reputation(r) -> float:
    if hasattr(r, "reputation"):
        return float(r.reputation)
    return float(getattr(r, "reputation_raw", 10**18)) / 10**18


def node_view(record, model: str) -> NodeView:
    """A registry record as an (unprobed) :class:`NodeView`."""
    return NodeView(
        node=NodeId(getattr(record, "node", None) or record.address),
        endpoint=record.endpoint,
        model=model,
        start=int(record.start),
        end=int(record.end),
        stake_wei=int(getattr(record, "stake", getattr(record, "stake_wei", 0))),
        reputation=_reputation(record),
        throughput=float(getattr(record, "throughput", 0) or 0),
        price_per_block=int(getattr(record, "price_per_block", getattr(record, "price", 0)) or 0),
        alive=_is_active(record),
    )


class NetworkView:
    """Builds :class:`Snapshot` objects; probes are cached for ``ttl_s`` seconds."""

    def __init__(
        self,
        records: Records,
        num_blocks: int | Callable[[str], int],
        prober: Prober | None = None,
        ttl_s: float = 30.0,  # seconds a probe answer stays fresh
        workers: int = 16,  # probes in flight at once
        clock: Callable[[], float] = time.monotonic,
        **snapshot_fields,  # passed to Snapshot (bytes_per_token, hidden_size, ...)
    ):
        self._records = records
        self._num_blocks = num_blocks
        self._prober = prober
        self._ttl = ttl_s
        self._workers = workers
        self._clock = clock
        self._cache: dict[str, tuple[float, Probe | None]] = {}
        self._fields = snapshot_fields

    def _probe_one(self, endpoint: str) -> Probe | None:
        try:
            return self._prober(endpoint)  # type: ignore[misc]
        except Exception as exc:  # a worker that fails to answer is simply not alive
            logger.debug("probe %s failed: %s", endpoint, exc)
            return None

    def probe(self, endpoints: list[str]) -> dict[str, Probe | None]:
        """Fresh or cached probe answers for ``endpoints``."""
        now = self._clock()
        stale = sorted({e for e in endpoints if e not in self._cache or now - self._cache[e][0] > self._ttl})
        if stale and self._prober is not None:
            with ThreadPoolExecutor(max_workers=max(1, min(self._workers, len(stale)))) as pool:
                for ep, ans in zip(stale, pool.map(self._probe_one, stale)):
                    self._cache[ep] = (now, ans)
            logger.info("probed %d worker(s); %d answered", len(stale), sum(self._cache[e][1] is not None for e in stale))
        return {e: self._cache[e][1] for e in endpoints if e in self._cache}

    def snapshot(self, model: str) -> Snapshot:
        recs = self._records(model) if callable(self._records) else list(self._records)
        views = [node_view(r, model) for r in recs]
        if self._prober is not None:
            answers = self.probe([v.endpoint for v in views if v.alive])
            views = [_join(v, answers.get(v.endpoint)) if v.alive else v for v in views]
        nb = self._num_blocks(model) if callable(self._num_blocks) else int(self._num_blocks)
        return Snapshot(model=model, num_blocks=nb, nodes=tuple(views), **self._fields)


def _join(v: NodeView, p: Probe | None) -> NodeView:
    """A registry view updated with one probe answer (None: the node is down)."""
    if p is None:
        return NodeView(**{**v.__dict__, "alive": False})
    thr = p.tokens_per_second * v.blocks if p.tokens_per_second > 0 else v.throughput
    return NodeView(
        **{**v.__dict__, "latency_ms": p.latency_ms, "throughput": thr, "free_cache_bytes": p.free_cache_bytes,
           "bandwidth": p.bandwidth if p.bandwidth else v.bandwidth}
    )


def grpc_prober(timeout_s: float = 2.0) -> Prober:
    """The real prober: ``WorkerService.Ping`` round trip, then ``Info``."""

    def probe(endpoint: str) -> Probe:
        with open_channel(endpoint) as channel:
            stub = worker_pb2_grpc.WorkerServiceStub(channel)
            stub.Ping(worker_pb2.PingRequest(sent_unix_ns=time.time_ns()), timeout=timeout_s)  # connect + warm up
            t0 = time.perf_counter()
            stub.Ping(worker_pb2.PingRequest(sent_unix_ns=time.time_ns()), timeout=timeout_s)
            rtt_ms = (time.perf_counter() - t0) * 1000.0
            info = stub.Info(worker_pb2.InfoRequest(), timeout=timeout_s)
        return Probe(latency_ms=rtt_ms, tokens_per_second=float(info.tokens_per_second),
                     free_cache_bytes=int(info.free_cache_bytes))

    return probe
