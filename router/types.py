"""Records the router works on: a snapshot of the network and a routed plan.

Everything here is plain data: the routing functions take a :class:`Snapshot`
and return a :class:`RoutedPlan` without any I/O. ``Snapshot.to_json`` /
``Snapshot.from_json`` give the file format of ``tessera router plan
--snapshot FILE.json``.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields

from proto.errors import ConfigError
from proto.types import NodeId, Plan


class Mode(str, enum.Enum):
    """What the requester optimises."""

    LATENCY = "latency"  # lowest predicted per-token latency (plus weighted price and trust)
    THROUGHPUT = "throughput"  # widest path: maximise the slowest hop's tokens/s, then latency
    PRICE = "price"  # lowest price per token (plus weighted trust; latency breaks ties)

    @classmethod
    def parse(cls, value: "str | Mode") -> "Mode":
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown routing mode {value!r}; choose one of: {names}") from None


@dataclass(frozen=True)
class NodeView:
    """One registered node as the router sees it."""

    node: NodeId  # checksummed 0x address of the node key
    endpoint: str  # host:port of its gRPC WorkerService
    model: str  # model name it serves
    start: int  # first registered block (inclusive)
    end: int  # block after the last registered one (exclusive)
    stake_wei: int = 0  # bonded stake, wei
    reputation: float = 1.0  # 1.0 neutral, clamped to [0.1, 10]
    throughput: float = 100.0  # block-tokens per second (one block processing one token)
    price_per_block: int = 0  # wei per block per output token
    latency_ms: float | None = None  # measured round trip router -> node, ms (None: not probed)
    bandwidth: float | None = None  # measured bytes per second into the node (None: not probed)
    alive: bool = True  # answered the last probe (or was not probed)
    free_cache_bytes: int | None = None  # session memory still free, bytes (from Info)

    @property
    def blocks(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Snapshot:
    """The network for one model at one moment."""

    model: str
    num_blocks: int
    nodes: tuple[NodeView, ...]
    hidden_size: int = 576  # activation width, values per token
    bytes_per_token: float = 640.0  # compressed activation bytes per token per hop (codec dependent)
    requester_latency_ms: dict[str, float] = field(default_factory=dict)  # node -> round trip, ms
    default_latency_ms: float = 20.0  # round trip assumed for a node never probed, ms
    default_bandwidth: float = 12.5e6  # bytes/s assumed for a node never probed (100 Mbit/s)

    def to_json(self) -> dict:
        d = asdict(self)
        d["nodes"] = [asdict(n) for n in self.nodes]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Snapshot":
        """Parse the JSON form; unknown keys are an error so typos do not pass silently."""
        try:
            node_keys = {f.name for f in fields(NodeView)}
            nodes = []
            for n in d["nodes"]:
                extra = set(n) - node_keys
                if extra:
                    raise ConfigError(f"snapshot node has unknown field(s) {sorted(extra)}")
                nodes.append(NodeView(**{**n, "node": NodeId(n["node"])}))
            top = {k: v for k, v in d.items() if k != "nodes"}
            extra = set(top) - {f.name for f in fields(cls)}
            if extra:
                raise ConfigError(f"snapshot has unknown field(s) {sorted(extra)}")
            return cls(**top, nodes=tuple(nodes))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"snapshot JSON is malformed ({exc}); see `tessera router plan --help`") from exc


@dataclass(frozen=True)
class Weights:
    """The requester's personalisation, in the mode's cost unit.

    In latency (and throughput) mode the unit is milliseconds per token: ``price``
    is ms a requester would wait to save 1 gwei per token; ``stake`` and
    ``reputation`` are ms charged per hop for each e-fold a node lies below the
    best stake in the snapshot / below the maximum reputation 10. In price mode
    the unit is gwei per token and the same weights are gwei.
    """

    price: float = 0.0
    stake: float = 0.0
    reputation: float = 0.0

    def __post_init__(self) -> None:
        for name in ("price", "stake", "reputation"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0 and v != float("inf")):
                raise ConfigError(f"weight {name} must be a finite number >= 0, got {v!r}")

    @classmethod
    def parse(cls, text: str | None) -> "Weights":
        """Parse ``price=1,stake=0.5,reputation=2``."""
        if not text:
            return cls()
        out: dict[str, float] = {}
        for part in text.split(","):
            key, sep, val = part.partition("=")
            key = key.strip()
            if not sep or key not in {"price", "stake", "reputation"}:
                raise ConfigError(f"bad weight {part!r}; use e.g. price=1,stake=0.5,reputation=2")
            try:
                out[key] = float(val)
            except ValueError:
                raise ConfigError(f"weight {key} must be a number, got {val!r}") from None
        return cls(**out)


@dataclass(frozen=True)
class ReplicaCost:
    """Predicted figures of one replica."""

    latency_ms: float  # predicted per-token latency: requester -> head ... tail -> requester
    price_wei: int  # wei per output token, summed over hops
    trust_penalty: float  # weighted stake + reputation penalty, mode units
    bottleneck_tps: float  # tokens/s of the slowest hop
    objective: float  # what the router minimised for this replica, mode units


@dataclass(frozen=True)
class RoutedPlan:
    """A plan plus what the router predicts for it."""

    plan: Plan
    mode: Mode
    costs: tuple[ReplicaCost, ...]
    objective: float  # total over replicas, mode units
    optimal: bool  # False only if the search hit its node limit (then: best found)

    def to_json(self) -> dict:
        return {
            "plan": self.plan.to_json(),
            "mode": self.mode.value,
            "objective": self.objective,
            "optimal": self.optimal,
            "replicas": [asdict(c) for c in self.costs],
        }
