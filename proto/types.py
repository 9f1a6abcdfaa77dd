"""Typed records that cross process, chain or disk boundaries.

Conventions fixed here for every component:

* Block spans are half-open ``[start, end)`` everywhere.
* A model is identified on chain by ``model_id = keccak256(name_utf8)``.
* A job's output is canonical bytes: each token id (or class id) as a 4-byte
  big-endian unsigned integer, concatenated. Its hash is ``keccak256(bytes)``.
  An embedding job's words are its embedding on a grid (:func:`embedding_words`).
* Weight commitment: ``weights_root = keccak256(h_input || h_block_0 || ... ||
  h_block_{N-1} || h_output)`` where ``h_*`` are 32-byte per-stage weight hashes
  (``worker.store.hashing``). ``h_input`` is the embedding stage (run by the node
  serving block 0), ``h_output`` the final norm + head (run by the node serving
  block N-1).
* Commitment: ``keccak256(abi.encode(uint256 jobId, uint256 replica,
  bytes32 outputHash, bytes32 salt, address tail))``.
* Sampling uniforms for step ``t``: ``uint256(keccak256(abi.encode(uint256 seed,
  uint256 t))) / 2**256`` as float64; temperature 0 means greedy.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import NewType, Sequence

from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from proto.errors import PlanError

JobId = NewType("JobId", int)
NodeId = NewType("NodeId", str)  # checksummed 0x address of the node's key
ModelId = NewType("ModelId", bytes)  # 32 bytes, keccak256(name)


def model_id(name: str) -> ModelId:
    """The on-chain id of a model name."""
    return ModelId(keccak(name.encode("utf-8")))


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
    """An ordered chain of hops covering ``[0, num_blocks)`` exactly once."""

    hops: tuple[Hop, ...]

    @property
    def head(self) -> Hop:
        return self.hops[0]

    @property
    def tail(self) -> Hop:
        return self.hops[-1]


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
        return {
            "model": self.model,
            "num_blocks": self.num_blocks,
            "replicas": [
                [{"node": h.node, "start": h.start, "end": h.end} for h in rep.hops]
                for rep in self.replicas
            ],
        }

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        return cls(
            model=d["model"],
            num_blocks=int(d["num_blocks"]),
            replicas=tuple(
                Replica(tuple(Hop(NodeId(h["node"]), int(h["start"]), int(h["end"])) for h in rep))
                for rep in d["replicas"]
            ),
        )


def encode_output(ids: Sequence[int]) -> bytes:
    """Canonical output bytes: 4-byte big-endian unsigned ids."""
    return b"".join(struct.pack(">I", int(i)) for i in ids)


def decode_output(data: bytes) -> list[int]:
    """Inverse of :func:`encode_output`."""
    if len(data) % 4:
        raise ValueError(f"output length {len(data)} is not a multiple of 4")
    return [struct.unpack(">I", data[i : i + 4])[0] for i in range(0, len(data), 4)]


EMBEDDING_GRID = 256  # grid steps per unit: an embedding value v is committed as round(v * 256)
EMBEDDING_OFFSET = 1 << 15  # added to every grid value so that each word is unsigned


def embedding_words(values: Sequence[float]) -> list[int]:
    """An embedding's output words: ``floor(v * EMBEDDING_GRID + 0.5) + EMBEDDING_OFFSET`` for each
    value (a unit-norm embedding's values lie in [-1, 1], so words in [32512, 33024]), clamped to
    [0, 65535]. ``v`` is the float32 value as a Python float: ``v * 256`` and the ``+ 0.5`` are exact,
    so every machine computes the same words from the same values. Canonical bytes as for ids
    (:func:`encode_output`): 4-byte big-endian words, one per dimension, in order."""
    return [min(max(math.floor(float(v) * EMBEDDING_GRID + 0.5), -EMBEDDING_OFFSET), EMBEDDING_OFFSET - 1)
            + EMBEDDING_OFFSET for v in values]


def embedding_values(words: Sequence[int]) -> list[float]:
    """The grid values of an embedding's output words (inverse of :func:`embedding_words` up to the grid)."""
    return [(int(w) - EMBEDDING_OFFSET) / EMBEDDING_GRID for w in words]


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


# A hop travels on chain as one uint256: node address in bits 0-159, start in 160-175,
# end in 176-191, replica index in 192-199 (see JobMarket.sol).
MAX_REPLICAS = 8  # = JobPlan.MAX_REPLICAS (replica bitmasks are uint8)


def pack_hop(node: str, start: int, end: int, replica: int) -> int:
    addr = int(node, 16)
    if not all(0 <= v < 1 << bits for v, bits in ((addr, 160), (start, 16), (end, 16), (replica, 8))):
        raise ValueError(f"hop {node} [{start}, {end}) of replica {replica} does not fit the packed encoding")
    return addr | (start << 160) | (end << 176) | (replica << 192)


def pack_plan(plan: Plan) -> list[int]:
    return [pack_hop(h.node, h.start, h.end, r) for r, rep in enumerate(plan.replicas) for h in rep.hops]


def check_hops(hops: Sequence[int], num_blocks: int) -> int:
    """``JobPlan.check`` in Python, the same checks in the same order; returns R.

    Raises :class:`PlanError` named and argued as the contract's revert
    (tests/integration/test_plan_rules.py holds the two to the same verdicts).
    """
    if not hops:
        raise PlanError("JobPlanBadReplicas", hop=0, replica=0)
    replica = pos = 0
    seen: set[int] = set()
    for i, h in enumerate(hops):
        rep, start, end, node = (h >> 192) & 0xFF, (h >> 160) & 0xFFFF, (h >> 176) & 0xFFFF, h & ((1 << 160) - 1)
        if rep != replica:
            if rep != replica + 1 or i == 0:
                raise PlanError("JobPlanBadReplicas", hop=i, replica=rep)
            if pos != num_blocks:
                raise PlanError("JobPlanIncomplete", replica=replica, coveredTo=pos, numBlocks=num_blocks)
            replica, pos = rep, 0
        if start > pos:
            raise PlanError("JobPlanGap", replica=replica, hop=i, expectedStart=pos, start=start)
        if start < pos or end <= start or end > num_blocks:
            raise PlanError("JobPlanOverlap", replica=replica, hop=i, expectedStart=pos, start=start, end=end)
        pos = end
        if node in seen:
            raise PlanError("JobPlanNodeReused", node=to_checksum_address(node.to_bytes(20, "big")))
        seen.add(node)
    if pos != num_blocks:
        raise PlanError("JobPlanIncomplete", replica=replica, coveredTo=pos, numBlocks=num_blocks)
    if replica >= MAX_REPLICAS:
        raise PlanError("JobPlanBadReplicas", hop=len(hops) - 1, replica=replica)
    return replica + 1


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
