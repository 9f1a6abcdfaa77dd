"""Typed records read from the contracts (the packed plan encoding is in :mod:`proto.types`)."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address

from proto.types import Codec, JobId, ModelId, NodeId, Plan, unpack_plan

REP_ONE = 10**18  # reputation fixed point (NodeRegistry.REP_ONE)


NODE_STATUS = {0: "none", 1: "active", 2: "unbonding", 3: "exited", 4: "understaked"}
JOB_STATUS = {0: "none", 1: "open", 2: "finalized"}
HOP_OUTCOME = {0: "none", 1: "paid", 2: "failed", 3: "slashed"}  # JobFinalized.outcomes (NodeRegistry.OUTCOME_*)


def replicas_in(mask: int) -> tuple[int, ...]:
    """The replica indices whose bits are set in a JobMarket replica bitmask."""
    return tuple(r for r in range(mask.bit_length()) if mask >> r & 1)


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
    tx_hash: str = ""  # 0x hash of the submitJob transaction, where known

    def plan(self, model: str, num_blocks: int) -> Plan:
        return unpack_plan(self.hops, model, num_blocks)

    @classmethod
    def from_event(cls, args, block: int, tx_hash: str = "") -> "JobRequest":
        """From the args of a JobSubmitted event (a web3 log's ``args`` or a ChainEvent's)."""
        p = args["params"]
        get = (lambda k: p[k]) if isinstance(p, dict) else (lambda k: getattr(p, k))
        return cls(JobId(args["jobId"]), args["requester"], ModelId(bytes(args["modelId"])), args["fee"],
                   tuple(args["hops"]), bytes(get("input")), bytes(get("inputHash")), get("inputUri"),
                   get("maxTokens"), get("temperatureMilli") / 1000, get("seed"), Codec(get("codec")),
                   args["commitDeadline"], args["revealDeadline"], block, tx_hash)


@dataclass(frozen=True)
class Reveal:
    """A replica's revealed output (JobRevealed)."""

    replica: int
    output_hash: bytes  # keccak(output)
    output: bytes  # canonical output bytes (proto.types.decode_output)


@dataclass(frozen=True)
class HopSettlement:
    """What finalize did to the node of one hop (one entry of JobFinalized, in the plan's order)."""

    node: NodeId
    outcome: str  # none | paid | failed | slashed (HOP_OUTCOME)
    paid: int  # wei credited to the node's earnings (integer-division dust included)
    slashed: int  # wei of stake taken from the node (credited to the requester)


@dataclass(frozen=True)
class JobSettlement:
    """A finalized job as JobMarket reported it in JobFinalized: the one record of who got what."""

    job_id: JobId
    majority: bool  # False: no strict majority, the fee was refunded
    output_hash: bytes  # the majority's keccak(output); zero without one
    winners: tuple[int, ...]  # replicas that revealed the majority's output
    refund: int  # wei of the fee credited back to the requester
    hops: tuple[HopSettlement, ...]
    block: int
    tx_hash: str  # 0x hash of the finalize transaction

    @property
    def payouts(self) -> dict[NodeId, int]:
        """Wei credited to each paid node."""
        return {h.node: h.paid for h in self.hops if h.outcome == "paid"}

    @property
    def slashes(self) -> dict[NodeId, int]:
        """Wei of stake taken from each slashed node."""
        return {h.node: h.slashed for h in self.hops if h.outcome == "slashed"}

    @property
    def requester_credit(self) -> int:
        """Wei credited to the requester by this job: the refund plus slashed stake."""
        return self.refund + sum(h.slashed for h in self.hops)

    @classmethod
    def from_event(cls, args, block: int, tx_hash: str) -> "JobSettlement":
        """From the args of a JobFinalized event."""
        hops = tuple(HopSettlement(NodeId(to_checksum_address(n)), HOP_OUTCOME.get(o, str(o)), int(p), int(s))
                     for n, o, p, s in zip(args["nodes"], args["outcomes"], args["paid"], args["slashed"], strict=True))
        return cls(JobId(args["jobId"]), args["outcome"] == 1, bytes(args["outputHash"]),
                   replicas_in(args["winnersMask"]), int(args["refund"]), hops, block, tx_hash)
