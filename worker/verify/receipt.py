"""Hop receipts: what one hop of a replica claims it computed, canonically encoded and hashed.

A receipt is (job, replica, hop, node, span, the hash of the output the hop
saw, one :class:`Fingerprint` per chunk). Its digest is ``keccak256(abi.encode(
RECEIPT_TYPEHASH, jobId, replica, hop, node, start, end, outputHash,
chunksHash))`` with ``chunksHash = keccak256(concat(keccak256(chunk_i bytes)))``: a 32-byte message a node key signs (EIP-191,
as hop messages are) and a contract could recompute from the fields. A
replica's receipts are rooted, in served-hop order, as ``receiptsRoot =
keccak256(concat(digest_i))``, the value the tail commits beside its output.

:class:`ReceiptRecorder` is a hop's side: it buffers each step's output and
seals a chunk into a fingerprint once the tokens chosen in it are known.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from proto.errors import ProtocolError
from proto.types import JobId, NodeId, encode_output, output_hash
from worker.verify.fingerprint import CHUNK_STEPS, Fingerprint, K, chunk_of, chunk_seed, fingerprint

RECEIPT_TYPEHASH = keccak(b"tessera.v1.HopReceipt(uint256 jobId,uint256 replica,uint256 hop,address node,"
                          b"uint256 start,uint256 end,bytes32 outputHash,bytes32 chunksHash)")
MAX_CHUNKS = 1 << 16  # chunks in one receipt (2M generated tokens)
_HEAD = struct.Struct(">32sIIB20sII32sH")  # jobId, replica, hop, version, node, start, end, outputHash, chunks
VERSION = 1


@dataclass(frozen=True)
class HopReceipt:
    """One served hop's claim over a whole job."""

    job_id: JobId
    replica: int  # replica index in the plan
    hop: int  # position among the replica's served hops (0 = head)
    node: NodeId  # checksummed address of the hop's node key
    start: int  # first block served (inclusive)
    end: int  # block after the last served (exclusive)
    output_hash: bytes  # keccak256 of the output ids (proto.types.encode_output) the hop was sent back
    chunks: tuple[Fingerprint, ...]  # chunk 0 = the prefill, then 32 decode steps each

    def __post_init__(self):
        if len(self.output_hash) != 32:
            raise ProtocolError(f"receipt output hash must be 32 bytes, got {len(self.output_hash)}")

    def chunks_hash(self) -> bytes:
        return keccak(b"".join(keccak(c.to_bytes()) for c in self.chunks))

    def digest(self) -> bytes:
        """The 32 bytes a node signs and the receipts root is built from."""
        return keccak(abi_encode(["bytes32", "uint256", "uint256", "uint256", "address", "uint256", "uint256",
                                  "bytes32", "bytes32"],
                                 [RECEIPT_TYPEHASH, int(self.job_id), self.replica, self.hop, self.node, self.start,
                                  self.end, self.output_hash, self.chunks_hash()]))

    def to_bytes(self) -> bytes:
        """Canonical wire form: a fixed header, then each chunk length-prefixed (u16)."""
        head = _HEAD.pack(int(self.job_id).to_bytes(32, "big"), self.replica, self.hop, VERSION,
                          bytes.fromhex(self.node[2:]), self.start, self.end, self.output_hash, len(self.chunks))
        return head + b"".join(struct.pack(">H", len(b)) + b for b in (c.to_bytes() for c in self.chunks))

    @classmethod
    def from_bytes(cls, data: bytes) -> "HopReceipt":
        if len(data) < _HEAD.size:
            raise ProtocolError(f"receipt of {len(data)} bytes is shorter than its {_HEAD.size}-byte header")
        job, replica, hop, version, node, start, end, out_hash, n = _HEAD.unpack_from(data)
        if version != VERSION:
            raise ProtocolError(f"receipt version {version} is not {VERSION}; upgrade the worker")
        off, chunks = _HEAD.size, []
        for _ in range(n):
            if off + 2 > len(data):
                raise ProtocolError("receipt truncated inside its chunk list")
            (size,) = struct.unpack_from(">H", data, off)
            if off + 2 + size > len(data):
                raise ProtocolError("receipt truncated inside a chunk fingerprint")
            chunks.append(Fingerprint.from_bytes(data[off + 2 : off + 2 + size]))
            off += 2 + size
        if off != len(data):
            raise ProtocolError(f"receipt has {len(data) - off} stray bytes after its chunks")
        return cls(JobId(int.from_bytes(job, "big")), replica, hop, NodeId(to_checksum_address(node)), start, end,
                   out_hash, tuple(chunks))


def receipts_root(receipts: Sequence[HopReceipt]) -> bytes:
    """``keccak256(concat(digest_i))`` over a replica's served hops, in order."""
    return keccak(b"".join(r.digest() for r in receipts))


class ReceiptRecorder:
    """One hop's receipt in the making: buffer each step's output, seal chunks as the tokens arrive
    (the tail's choices, relayed back up the ring to every hop).

    ``add(step, y)`` takes the hop's output of ``step`` as sent (``(1, T, C)``:
    hidden states, or the tail's logits); ``seal(tokens)`` fingerprints every
    buffered chunk whose steps all have a token; ``receipt(tokens)`` seals the
    rest and returns the receipt. Steps must arrive in order, each once.
    """

    def __init__(self, job_id: JobId, replica: int, hop: int, node: NodeId, start: int, end: int, k: int = K):
        self.job_id, self.replica, self.hop, self.node, self.start, self.end, self.k = (
            job_id, replica, hop, node, start, end, k)
        self.chunks: list[Fingerprint] = []
        self._rows: list[np.ndarray] = []  # outputs of the steps of the open chunk
        self._next = 0  # the step expected next

    def add(self, step: int, y: torch.Tensor) -> None:
        if step != self._next:
            raise ProtocolError(f"receipt of hop {self.hop} expected step {self._next}, got {step}")
        if chunk_of(step) != len(self.chunks):
            raise ProtocolError(f"step {step} arrived before chunk {len(self.chunks)} was sealed")
        self._rows.append(y.detach().to("cpu", torch.float32).reshape(-1, y.shape[-1]).numpy().copy())
        self._next += 1

    def seal(self, tokens: Sequence[int]) -> None:
        """Fingerprint the open chunk if all its steps are done and have their tokens."""
        c = len(self.chunks)
        last = 0 if c == 0 else c * CHUNK_STEPS  # the open chunk's last step
        if self._rows and self._next == last + 1 and len(tokens) > last:
            self._close(tokens)

    def receipt(self, tokens: Sequence[int]) -> HopReceipt:
        """The whole receipt, once the run is over (``tokens``: every chosen token)."""
        if len(tokens) < self._next:
            raise ProtocolError(f"hop {self.hop} ran {self._next} steps but only {len(tokens)} tokens were chosen")
        if self._rows:
            self._close(tokens)
        return HopReceipt(self.job_id, self.replica, self.hop, self.node, self.start, self.end,
                          output_hash(encode_output(tokens)), tuple(self.chunks))

    def _close(self, tokens: Sequence[int]) -> None:
        c = len(self.chunks)
        lo = 0 if c == 0 else 1 + (c - 1) * CHUNK_STEPS
        seed = chunk_seed(self.job_id, self.replica, self.hop, c, tokens[lo : self._next])
        self.chunks.append(fingerprint(np.concatenate(self._rows), seed, self.k))
        self._rows = []
