"""Typed records read from the contracts (the packed plan encoding is in :mod:`proto.types`)."""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from proto.types import Codec, ExecSpec, JobId, JobMode, ModelId, NodeId, Plan, unpack_hop, unpack_plan

REP_ONE = 10**18  # reputation fixed point (NodeRegistry.REP_ONE)
_U96 = (1 << 96) - 1  # JobFinalized per-hop word: paid | slashed << 96 | outcome << 192

NODE_STATUS = {0: "none", 1: "active", 2: "unbonding", 3: "exited", 4: "understaked"}
JOB_STATUS = {0: "none", 1: "open", 2: "finalized", 3: "disputed", 4: "attesting"}
HOP_OUTCOME = {0: "none", 1: "paid", 2: "failed", 3: "slashed"}  # JobFinalized.outcomes (NodeRegistry.OUTCOME_*)
JOB_OUTCOME = {1: "agreed", 2: "verified", 3: "refunded", 4: "unverified"}  # JobFinalized.outcome
DISPUTE_REASON = {1: "outputs differ", 2: "audited", 3: "seed expired, re-armed"}  # JobDisputed.reason
VERIFIER_OUTCOME = {1: "majority", 2: "absent or dissenting"}  # DisputeSettled.outcomes


def replicas_in(mask: int) -> tuple[int, ...]:
    """The replica indices whose bits are set in a JobMarket replica bitmask."""
    return tuple(r for r in range(mask.bit_length()) if mask >> r & 1)


@dataclass(frozen=True)
class ModelRecord:
    model_id: ModelId
    name: str
    num_blocks: int
    context_length: int  # tokens (prompt + generated)
    publisher: str
    deprecated: bool
    weights_root: bytes
    tokenizer_hash: bytes
    config_hash: bytes

    @property
    def ref(self) -> str:
        """``0xPUBLISHER/name``: the model's name with its namespace."""
        return f"{self.publisher}/{self.name}"


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
    caps: int = 0  # proto.types CAP_* and 1 << dtype per dtype class run

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
        stake, rep, earnings, _tag, start, end, status, caps, price, payout, unbond_at, thr, model, endpoint = t
        return cls(NodeId(to_checksum_address(address)), ModelId(bytes(model)), start, end, endpoint, stake, rep,
                   earnings, payout, thr, price, unbond_at, NODE_STATUS.get(status, str(status)), caps)


@dataclass(frozen=True)
class JobRecord:
    """A job's stored state (the request itself lives in JobSubmitted)."""

    job_id: JobId
    commit_deadline: int  # unix seconds
    reveal_deadline: int
    num_replicas: int
    status: str  # open | finalized | disputed | attesting
    committed_mask: int
    revealed_mask: int
    standby_mask: int  # replicas whose tail's standby committed
    mode: JobMode
    audit_bps: int
    commit_block: int  # block of the latest commit
    seed_block: int  # disputed: the block whose hash draws the verifiers
    stage_deadline: int  # disputed: keepers paid after it; attesting: the attestation deadline
    keeper_paid: int  # bit s: a keeper was paid for stage s

    @classmethod
    def from_tuple(cls, job_id: int, t) -> "JobRecord":
        (commit_dl, reveal_dl, r, status, committed, revealed, standby, mode, audit, _dtype, _weights, keeper,
         commit_block, seed_block, stage_dl, _hash) = t
        return cls(JobId(job_id), commit_dl, reveal_dl, r, JOB_STATUS.get(status, str(status)), committed, revealed,
                   standby, JobMode(mode), audit, commit_block, seed_block, stage_dl, keeper)


@dataclass(frozen=True)
class JobRequest:
    """Everything a worker needs about a job, decoded from JobSubmitted."""

    job_id: JobId
    requester: str
    model_id: ModelId
    fee: int
    hops: tuple[int, ...]  # packed
    prices: tuple[int, ...]  # per hop word: its node's price at submission
    weight: int  # the plan's price weight (JobPlan.weight), fixed at submission
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
    spec: ExecSpec = ExecSpec()  # dtype, weights, mode, audit, sampling extras

    def plan(self, model: str, num_blocks: int) -> Plan:
        return unpack_plan(self.hops, model, num_blocks)

    def terms(self) -> tuple:
        """JobSettle.Terms (requester, modelId, fee, weight, prices), as finalize and drawVerifiers take it."""
        return (self.requester, self.model_id, self.fee, self.weight, list(self.prices))

    def terms_digest(self) -> bytes:
        """The terms' digest, as commit takes it: keccak256(abi.encode(requester, modelId, fee, weight,
        keccak256(abi.encodePacked(prices))))."""
        prices_hash = keccak(b"".join(p.to_bytes(32, "big") for p in self.prices))
        return keccak(abi_encode(["address", "bytes32", "uint256", "uint256", "bytes32"],
                                 [self.requester, self.model_id, self.fee, self.weight, prices_hash]))

    @classmethod
    def from_event(cls, args, block: int, tx_hash: str = "") -> "JobRequest":
        """From the args of a JobSubmitted event (a web3 log's ``args`` or a ChainEvent's)."""
        p = args["params"]
        get = (lambda k: p[k]) if isinstance(p, dict) else (lambda k: getattr(p, k))
        return cls(JobId(args["jobId"]), args["requester"], ModelId(bytes(args["modelId"])), args["fee"],
                   tuple(args["hops"]), tuple(args["prices"]), args["weight"], bytes(get("input")), bytes(get("inputHash")),
                   get("inputUri"), get("maxTokens"), get("temperatureMilli") / 1000, get("seed"),
                   Codec(get("codec")), args["commitDeadline"], args["revealDeadline"], block, tx_hash,
                   ExecSpec.unpack(get("spec")))


@dataclass(frozen=True)
class Reveal:
    """A replica's revealed output and route (JobRevealed)."""

    replica: int
    output_hash: bytes  # keccak(output)
    output: bytes  # canonical output bytes (proto.types.decode_output)
    receipts_root: bytes = b"\0" * 32  # binds the replica's hop receipts
    served_mask: int = 0  # bit i: the replica's i-th hop word served


@dataclass(frozen=True)
class HopSettlement:
    """What finalize did to the node of one hop word (one entry of JobFinalized, in plan order)."""

    node: NodeId
    outcome: str  # none | paid | slashed (HOP_OUTCOME)
    paid: int  # wei credited to the node's earnings
    slashed: int  # wei of stake taken from the node (to the verifiers in the majority, or burned)


@dataclass(frozen=True)
class VerifierSettlement:
    """What a dispute's settlement did to one drawn verifier (DisputeSettled)."""

    node: NodeId
    outcome: str  # majority (paid, reputation up) | absent or dissenting (reputation down)
    paid: int  # wei credited to its earnings


@dataclass(frozen=True)
class JobSettlement:
    """A finalized job as JobMarket reported it (JobFinalized, and DisputeSettled after a dispute)."""

    job_id: JobId
    outcome: str  # agreed | verified | refunded | unverified (JOB_OUTCOME)
    paid_replicas: tuple[int, ...]  # replicas whose served hops were paid
    refund: int  # wei credited to the requester
    burned: int  # wei of slashed stake burned
    hops: tuple[HopSettlement, ...]
    block: int
    tx_hash: str  # 0x hash of the transaction that settled it
    verdicts: tuple[int, ...] = ()  # after a dispute: the decided verdict per replica
    verifiers: tuple[VerifierSettlement, ...] = ()

    @property
    def answer(self) -> int | None:
        """The replica whose output the requester gets: the lowest paid one."""
        return self.paid_replicas[0] if self.paid_replicas else None

    @property
    def payouts(self) -> dict[NodeId, int]:
        """Wei credited to each paid node of the plan."""
        return {h.node: h.paid for h in self.hops if h.outcome == "paid"}

    @property
    def slashes(self) -> dict[NodeId, int]:
        """Wei of stake taken from each slashed node."""
        return {h.node: h.slashed for h in self.hops if h.outcome == "slashed"}

    @classmethod
    def from_events(cls, fin, plan_hops, block: int, tx_hash: str, disputed=None) -> "JobSettlement":
        """From the args of JobFinalized and, after a dispute, of DisputeSettled (same transaction);
        ``plan_hops`` are the job's packed hops (JobFinalized's per-hop words are in their order)."""
        hops = tuple(HopSettlement(unpack_hop(h)[0], HOP_OUTCOME.get(w >> 192 & 0xFF, str(w >> 192 & 0xFF)),
                                   w & _U96, w >> 96 & _U96)
                     for h, w in zip(plan_hops, fin["hops"], strict=True))
        verdicts: tuple[int, ...] = ()
        verifiers: tuple[VerifierSettlement, ...] = ()
        if disputed is not None:
            verdicts = tuple(disputed["verdicts"])
            verifiers = tuple(VerifierSettlement(NodeId(to_checksum_address(n)), VERIFIER_OUTCOME.get(o, str(o)),
                                                 int(p))
                              for n, o, p in zip(disputed["verifiers"], disputed["outcomes"], disputed["paid"],
                                                 strict=True))
        return cls(JobId(fin["jobId"]), JOB_OUTCOME.get(fin["outcome"], str(fin["outcome"])),
                   replicas_in(fin["paidMask"]), int(fin["refund"]), int(fin["burnedWei"]), hops, block, tx_hash,
                   verdicts, verifiers)


@dataclass(frozen=True)
class JobDisputed:
    """A job went to dispute (JobDisputed): verifiers are drawn from ``seed_block``'s hash."""

    job_id: JobId
    reason: str  # outputs differ | audited | seed expired, re-armed (DISPUTE_REASON)
    seed_block: int
    block: int


@dataclass(frozen=True)
class Attestation:
    """One drawn verifier's attestation (Disputes.attestations)."""

    verifier: NodeId
    attested: bool
    verdicts: tuple[int, ...]  # per replica (0 unknown, 1 honest, 2 + k faulty at the k-th served hop)


@dataclass(frozen=True)
class DisputeState:
    """Where a job stands in its dispute: the job's status, the seed, the verifiers and what they said."""

    job_id: JobId
    status: str  # the job's: disputed (awaiting the draw) | attesting | finalized | open
    seed_block: int
    attest_deadline: int  # unix seconds, 0 before the draw
    attestations: tuple[Attestation, ...]

    @property
    def verifiers(self) -> tuple[NodeId, ...]:
        return tuple(a.verifier for a in self.attestations)

    @property
    def all_attested(self) -> bool:
        """Every drawn verifier attested (the dispute may be finalized before its deadline)."""
        return bool(self.attestations) and all(a.attested for a in self.attestations)
