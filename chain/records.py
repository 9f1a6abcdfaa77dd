"""Typed records read from the contracts, and the packed plan encoding.

A hop travels as one uint256: node address in bits 0-159, start in 160-175,
end in 176-191, replica index in 192-199 (see JobMarket.sol).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from eth_utils import to_checksum_address

from tessera.types import Hop, JobId, ModelId, NodeId, Plan, Replica

REP_ONE = 10**18  # reputation fixed point (NodeRegistry.REP_ONE)


class Codec(IntEnum):
    """Activation codec ids named per job on chain."""

    FP32 = 0
    FP16 = 1
    BF16 = 2
    INT8_ABSMAX = 3
    INT8_OUTLIER = 4
    INT8_DYNAMIC = 5

    @classmethod
    def parse(cls, v: "int | str | Codec") -> "Codec":
        if isinstance(v, str):
            return cls[v.upper().replace("-", "_")]
        return cls(int(v))

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


NODE_STATUS = {0: "none", 1: "active", 2: "unbonding", 3: "exited", 4: "understaked"}
JOB_STATUS = {0: "none", 1: "open", 2: "finalized"}


@dataclass(frozen=True)
class ModelRecord:
    model_id: ModelId
    name: str
    num_blocks: int
    publisher: str
    deprecated: bool
    weights_root: bytes
    tokenizer_hash: bytes
    config_hash: bytes


@dataclass(frozen=True)
class NodeRecord:
    """A node as the router and operators see it."""

    address: NodeId
    model_id: ModelId
    start: int  # first block served
    end: int  # one past the last block served
    endpoint: str  # host:port
    stake: int  # wei
    reputation_raw: int  # fixed point, REP_ONE = 1.0
    earnings: int  # wei, withdrawable
    payout: str
    throughput: int  # block-tokens per second
    price: int  # wei per block per output token
    unbond_at: int  # unix seconds (0 unless unbonding)
    status: str  # active | unbonding | exited | understaked

    @property
    def node(self) -> NodeId:
        return self.address

    @property
    def price_per_block(self) -> int:
        return self.price

    @property
    def reputation(self) -> float:
        return self.reputation_raw / REP_ONE

    @property
    def active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_tuple(cls, address: str, t) -> "NodeRecord":
        stake, rep, earnings, _tag, start, end, unbond_at, status, thr, payout, price, model, endpoint = t
        return cls(NodeId(to_checksum_address(address)), ModelId(bytes(model)), start, end, endpoint, stake, rep,
                   earnings, payout, thr, price, unbond_at, NODE_STATUS.get(status, str(status)))


@dataclass(frozen=True)
class JobRecord:
    """A job's stored state (the request itself lives in JobSubmitted)."""

    job_id: JobId
    requester: str
    commit_deadline: int  # unix seconds
    reveal_deadline: int
    num_replicas: int
    status: str  # open | finalized
    committed_mask: int
    revealed_mask: int
    terms_hash: bytes  # keccak(modelId, fee, hops); the fee and plan are in JobRecord's JobSubmitted


@dataclass(frozen=True)
class JobRequest:
    """Everything a worker needs about a job, decoded from JobSubmitted."""

    job_id: JobId
    requester: str
    model_id: ModelId
    fee: int
    hops: tuple[int, ...]  # packed
    input: bytes
    input_hash: bytes
    input_uri: str
    max_tokens: int
    temperature: float  # 0 = greedy
    seed: int
    codec: Codec
    commit_deadline: int
    reveal_deadline: int
    block: int

    def plan(self, model: str, num_blocks: int) -> Plan:
        return unpack_plan(self.hops, model, num_blocks)

    @classmethod
    def from_event(cls, args, block: int) -> "JobRequest":
        """From the args of a JobSubmitted event (a web3 log's ``args`` or a ChainEvent's)."""
        p = args["params"]
        get = (lambda k: p[k]) if isinstance(p, dict) else (lambda k: getattr(p, k))
        return cls(JobId(args["jobId"]), args["requester"], ModelId(bytes(args["modelId"])), args["fee"],
                   tuple(args["hops"]), bytes(get("input")), bytes(get("inputHash")), get("inputUri"),
                   get("maxTokens"), get("temperatureMilli") / 1000, get("seed"), Codec(get("codec")),
                   args["commitDeadline"], args["revealDeadline"], block)


def pack_hop(node: str, start: int, end: int, replica: int) -> int:
    return int(node, 16) | (start << 160) | (end << 176) | (replica << 192)


def pack_plan(plan: Plan) -> list[int]:
    return [pack_hop(h.node, h.start, h.end, r) for r, rep in enumerate(plan.replicas) for h in rep.hops]


def unpack_hop(word: int) -> tuple[NodeId, int, int, int]:
    node = NodeId(to_checksum_address((word & ((1 << 160) - 1)).to_bytes(20, "big")))
    return node, (word >> 160) & 0xFFFF, (word >> 176) & 0xFFFF, (word >> 192) & 0xFF


def unpack_plan(hops: "list[int] | tuple[int, ...]", model: str, num_blocks: int) -> Plan:
    reps: list[list[Hop]] = []
    for w in hops:
        node, s, e, r = unpack_hop(w)
        while len(reps) <= r:
            reps.append([])
        reps[r].append(Hop(node, s, e))
    return Plan(model, num_blocks, tuple(Replica(tuple(r)) for r in reps))
