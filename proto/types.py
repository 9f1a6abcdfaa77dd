"""Typed records that cross process, chain or disk boundaries.

Conventions fixed here for every component:

* Block spans are half-open ``[start, end)`` everywhere.
* A model is identified on chain by ``model_id = keccak256(abi.encode(address publisher,
  string name))``: names are namespaced by their publisher (written ``0xPUBLISHER/name``).
* A job's output is canonical bytes: each token id (or class id) as a 4-byte
  big-endian unsigned integer, concatenated. Its hash is ``keccak256(bytes)``.
* Weight commitment: ``weights_root = keccak256(h_input || h_block_0 || ... ||
  h_block_{N-1} || h_output)`` where ``h_*`` are 32-byte per-stage weight hashes
  (``worker.store.hashing``). ``h_input`` is the embedding stage (run by the node
  serving block 0), ``h_output`` the final norm + head (run by the node serving
  block N-1).
* Commitment: ``keccak256(abi.encode(uint256 jobId, uint256 replica,
  bytes32 outputHash, bytes32 receiptsRoot, uint64 servedMask, bytes32 salt))``
  (the contract stores it XOR the committer's address; ``chain.client.commitment``).
* servedMask: bit i = the replica's i-th hop word (primaries and standbys in packed
  order) served; :meth:`Replica.primary_mask` is the route without failover.
* Sampling uniforms for step ``t``: ``uint256(keccak256(abi.encode(uint256 seed,
  uint256 t))) / 2**256`` as float64; temperature 0 means greedy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NewType, Sequence

from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import is_hex_address, to_checksum_address

from proto.errors import PlanError

JobId = NewType("JobId", int)
NodeId = NewType("NodeId", str)  # checksummed 0x address of the node's key
ModelId = NewType("ModelId", bytes)  # 32 bytes, keccak256(abi.encode(publisher, name))

MAX_NAME_BYTES = 64  # = ModelRegistry.MAX_NAME_BYTES


def model_id(name: str, publisher: str) -> ModelId:
    """The on-chain id of model ``name`` published by ``publisher`` (a 0x address)."""
    return ModelId(keccak(abi_encode(["address", "string"], [to_checksum_address(publisher), name])))


def split_model_ref(ref: str) -> tuple[str | None, str]:
    """``"0xPUBLISHER/name"`` -> (checksummed publisher, name); ``"name"`` -> (None, name)."""
    head, sep, tail = ref.partition("/")
    if not sep:
        return None, ref
    if not is_hex_address(head) or not tail or "/" in tail:
        raise ValueError(f"{ref!r} is not NAME or 0xPUBLISHER/NAME (a 20-byte hex address, one '/')")
    return to_checksum_address(head), tail


@dataclass(frozen=True)
class Hop:
    """One node serving blocks ``[start, end)`` inside a replica."""

    node: NodeId
    start: int
    end: int

    @property
    def blocks(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Replica:
    """An ordered chain of primary hops covering ``[0, num_blocks)`` exactly once, and standbys:
    hops that may take over the exact span of one primary (failover)."""

    hops: tuple[Hop, ...]  # primaries, in block order
    standbys: tuple[Hop, ...] = ()  # each with the span of the primary it backs

    @property
    def head(self) -> Hop:
        return self.hops[0]

    @property
    def tail(self) -> Hop:
        return self.hops[-1]

    def words(self) -> tuple[tuple[Hop, bool], ...]:
        """(hop, is_standby) in packed order: each primary, then the standbys of its span;
        standbys whose span no primary has go last (the contract refuses them)."""
        out: list[tuple[Hop, bool]] = []
        used: set[int] = set()
        for h in self.hops:
            out.append((h, False))
            for k, s in enumerate(self.standbys):
                if k not in used and (s.start, s.end) == (h.start, h.end):
                    out.append((s, True))
                    used.add(k)
        out += [(s, True) for k, s in enumerate(self.standbys) if k not in used]
        return tuple(out)

    def primary_mask(self) -> int:
        """servedMask of the replica when every primary served (no failover)."""
        return sum(1 << i for i, (_, standby) in enumerate(self.words()) if not standby)


@dataclass(frozen=True)
class Plan:
    """R node-disjoint replicas for one job."""

    model: str
    num_blocks: int
    replicas: tuple[Replica, ...]

    def validate(self) -> None:
        """Raise :class:`PlanError` where ``submitJob`` would revert in ``JobPlan.check``.

        Only the plan's shape is checked, against ``num_blocks``; whether each node is
        active, serves its span and the right model is chain state, checked by the
        contract alone (``NodeRegistry.checkHops``). A replica with no hops cannot be
        packed; as the last replica it would silently vanish, so it is refused here as
        the ``JobPlanIncomplete`` the contract would give if it could see it.
        """
        n = check_hops(pack_plan(self), self.num_blocks)
        if n != len(self.replicas):
            raise PlanError("JobPlanIncomplete", replica=n, coveredTo=0, numBlocks=self.num_blocks)

    def to_json(self) -> dict:
        d: dict = {
            "model": self.model,
            "num_blocks": self.num_blocks,
            "replicas": [[_hop_json(h) for h in rep.hops] for rep in self.replicas],
        }
        if any(rep.standbys for rep in self.replicas):
            d["standbys"] = [[_hop_json(h) for h in rep.standbys] for rep in self.replicas]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        standbys = d.get("standbys") or [[] for _ in d["replicas"]]
        return cls(
            model=d["model"],
            num_blocks=int(d["num_blocks"]),
            replicas=tuple(Replica(tuple(map(_hop_from, rep)), tuple(map(_hop_from, sb)))
                           for rep, sb in zip(d["replicas"], standbys, strict=True)),
        )


def _hop_json(h: Hop) -> dict:
    return {"node": h.node, "start": h.start, "end": h.end}


def _hop_from(d: dict) -> Hop:
    return Hop(NodeId(d["node"]), int(d["start"]), int(d["end"]))


def encode_output(ids: Sequence[int]) -> bytes:
    """Canonical output bytes: 4-byte big-endian unsigned ids."""
    return b"".join(struct.pack(">I", int(i)) for i in ids)


def decode_output(data: bytes) -> list[int]:
    """Inverse of :func:`encode_output`."""
    if len(data) % 4:
        raise ValueError(f"output length {len(data)} is not a multiple of 4")
    return [struct.unpack(">I", data[i : i + 4])[0] for i in range(0, len(data), 4)]


def output_hash(data: bytes) -> bytes:
    return keccak(data)


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


class DType(IntEnum):
    """Activation dtype class a job pins (JobParams.dtype)."""

    FP32 = 0
    BF16 = 1
    FP16 = 2


class WeightsMode(IntEnum):
    """Weights a job accepts (JobParams.weights)."""

    EXACT = 0  # fp32 weights only
    INT8_MIXED = 1  # int8-mixed weights allowed


class JobMode(IntEnum):
    """How a job is verified (JobParams.mode)."""

    REPLICATED = 0  # R replicas; divergence goes to contract-drawn verifiers
    OPTIMISTIC = 1  # one replica, audited with probability auditBps / 10000


@dataclass(frozen=True)
class ExecSpec:
    """A job's execution spec, one word on chain (JobParams.spec): how the replicas must run."""

    dtype: DType = DType.FP32
    weights: WeightsMode = WeightsMode.EXACT
    mode: JobMode = JobMode.REPLICATED
    audit_bps: int = 0  # optimistic jobs: audit probability x 10000
    top_p_milli: int = 0  # 0 off
    repetition_penalty_milli: int = 0  # 0 off
    top_k: int = 0  # 0 off

    def pack(self) -> int:
        """dtype | weights << 8 | mode << 16 | auditBps << 24 | topPMilli << 40 | repetitionPenaltyMilli << 56
        | topK << 72 (JobMarket.JobParams.spec)."""
        return (int(self.dtype) | int(self.weights) << 8 | int(self.mode) << 16 | self.audit_bps << 24
                | self.top_p_milli << 40 | self.repetition_penalty_milli << 56 | self.top_k << 72)

    @classmethod
    def unpack(cls, word: int) -> "ExecSpec":
        return cls(DType(word & 0xFF), WeightsMode(word >> 8 & 0xFF), JobMode(word >> 16 & 0xFF), word >> 24 & 0xFFFF,
                   word >> 40 & 0xFFFF, word >> 56 & 0xFFFF, word >> 72)


# Node capabilities (NodeRegistry.register caps): bit `dtype` per dtype class run, and weights.
CAP_EXACT = 1 << 3  # runs exact (fp32) weights
CAP_INT8 = 1 << 4  # runs int8-mixed weights
ALL_CAPS = 0b111 | CAP_EXACT | CAP_INT8

# Verdicts a verifier attests per replica (Disputes.attest).
VERDICT_UNKNOWN = 0  # the replica did not reveal a route (or the verifier abstains)
VERDICT_HONEST = 1


def verdict_faulty(k: int) -> int:
    """The verdict naming the replica's k-th served hop (from 0) as the first faulty one."""
    return 2 + k


# A hop travels on chain as one uint256: node address in bits 0-159, start in 160-175,
# end in 176-191, replica index in 192-199, standby flag in bit 200 (see JobPlan.sol).
MAX_REPLICAS = 8  # = JobPlan.MAX_REPLICAS (replica bitmasks are uint8)
MAX_WORDS = 64  # = JobPlan.MAX_WORDS: hop words per replica (servedMask is uint64)
STANDBY_BIT = 1 << 200


def pack_hop(node: str, start: int, end: int, replica: int, standby: bool = False) -> int:
    addr = int(node, 16)
    if not all(0 <= v < 1 << bits for v, bits in ((addr, 160), (start, 16), (end, 16), (replica, 8))):
        raise ValueError(f"hop {node} [{start}, {end}) of replica {replica} does not fit the packed encoding")
    return addr | (start << 160) | (end << 176) | (replica << 192) | (STANDBY_BIT if standby else 0)


def pack_plan(plan: Plan) -> list[int]:
    return [pack_hop(h.node, h.start, h.end, r, sb) for r, rep in enumerate(plan.replicas) for h, sb in rep.words()]


def check_hops(hops: Sequence[int], num_blocks: int) -> int:
    """``JobPlan.check`` in Python, the same checks in the same order; returns R.

    Raises :class:`PlanError` named and argued as the contract's revert
    (tests/integration/test_plan_rules.py holds the two to the same verdicts).
    """
    if not hops:
        raise PlanError("JobPlanBadReplicas", hop=0, replica=0)
    replica = pos = words = 0
    seen: set[int] = set()
    for i, h in enumerate(hops):
        if h >> 201:
            raise PlanError("JobPlanHopJunk", hop=i, word=h)
        rep, start, end, node = (h >> 192) & 0xFF, (h >> 160) & 0xFFFF, (h >> 176) & 0xFFFF, h & ((1 << 160) - 1)
        if rep != replica:
            if rep != replica + 1 or i == 0:
                raise PlanError("JobPlanBadReplicas", hop=i, replica=rep)
            if pos != num_blocks:
                raise PlanError("JobPlanIncomplete", replica=replica, coveredTo=pos, numBlocks=num_blocks)
            replica, pos, words = rep, 0, 0
        if h & STANDBY_BIT:
            prev = hops[i - 1] if i else 0
            if words == 0 or prev & STANDBY_BIT or (prev >> 160) & 0xFFFFFFFF != (h >> 160) & 0xFFFFFFFF:
                raise PlanError("JobPlanBadStandby", replica=replica, hop=i)
        else:
            if start > pos:
                raise PlanError("JobPlanGap", replica=replica, hop=i, expectedStart=pos, start=start)
            if start < pos:
                raise PlanError("JobPlanOverlap", replica=replica, hop=i, expectedStart=pos, start=start)
            if end <= start:
                raise PlanError("JobPlanEmptyHop", replica=replica, hop=i, start=start, end=end)
            if end > num_blocks:
                raise PlanError("JobPlanPastEnd", replica=replica, hop=i, end=end, numBlocks=num_blocks)
            pos = end
        words += 1
        if words > MAX_WORDS:
            raise PlanError("JobPlanTooManyHops", replica=replica, hop=i, maxWords=MAX_WORDS)
        if node in seen:
            raise PlanError("JobPlanNodeReused", node=to_checksum_address(node.to_bytes(20, "big")))
        seen.add(node)
    if pos != num_blocks:
        raise PlanError("JobPlanIncomplete", replica=replica, coveredTo=pos, numBlocks=num_blocks)
    if replica >= MAX_REPLICAS:
        raise PlanError("JobPlanBadReplicas", hop=len(hops) - 1, replica=replica)
    return replica + 1


def tail_words(hops: Sequence[int]) -> list[int]:
    """Each replica's last primary word, then its standby if any, in plan order (JobMarket.commit's
    ``tails``; the job hash commits to them so a commit need not carry the whole plan)."""
    out: list[int] = []
    for i, h in enumerate(hops):
        if i + 1 < len(hops) and (hops[i + 1] >> 192) & 0xFF == (h >> 192) & 0xFF:
            continue
        if h & STANDBY_BIT:
            out.append(hops[i - 1])
        out.append(h)
    return out


def unpack_hop(word: int) -> tuple[NodeId, int, int, int, bool]:
    """(node, start, end, replica, standby) of a hop word."""
    node = NodeId(to_checksum_address((word & ((1 << 160) - 1)).to_bytes(20, "big")))
    return node, (word >> 160) & 0xFFFF, (word >> 176) & 0xFFFF, (word >> 192) & 0xFF, bool(word & STANDBY_BIT)


def unpack_plan(hops: "list[int] | tuple[int, ...]", model: str, num_blocks: int) -> Plan:
    reps: list[tuple[list[Hop], list[Hop]]] = []
    for w in hops:
        node, s, e, r, standby = unpack_hop(w)
        while len(reps) <= r:
            reps.append(([], []))
        reps[r][1 if standby else 0].append(Hop(node, s, e))
    return Plan(model, num_blocks, tuple(Replica(tuple(p), tuple(sb)) for p, sb in reps))
