"""Signed hop receipts: how a hop signs its receipt and how the tail (or a verifier) checks a replica's.

A receipt is signed with the node's key, EIP-191 over ``keccak256(domain ||
digest)``, ``domain`` being the deployment's hop-message domain
(:func:`worker.wire.domain_separator`): a receipt signed for one chain and
JobMarket is worthless on another, as a hop message is. The served route is
checked position by position, so a standby that served a span (failover)
passes exactly when the route given here names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import Hop
from worker.signing import Signer, recover_hash
from worker.verify.fingerprint import num_chunks
from worker.verify.receipt import HopReceipt, receipts_root


@dataclass(frozen=True)
class SignedReceipt:
    receipt: HopReceipt
    signature: bytes  # 65 bytes, r || s || v

    def to_pb(self) -> pb.SignedReceipt:
        return pb.SignedReceipt(receipt=self.receipt.to_bytes(), signature=self.signature)

    @classmethod
    def from_pb(cls, m: pb.SignedReceipt) -> "SignedReceipt":
        return cls(HopReceipt.from_bytes(m.receipt), bytes(m.signature))

    def signer(self, domain: bytes) -> str:
        """Checksummed address that signed this receipt under ``domain`` (ProtocolError if invalid)."""
        return to_checksum_address(recover_hash(signed_digest(self.receipt, domain), self.signature, "hop receipt"))


def pack(s: SignedReceipt) -> bytes:
    """Storage form: receipt bytes then the 65-byte signature."""
    return s.receipt.to_bytes() + s.signature


def unpack(data: bytes) -> SignedReceipt:
    return SignedReceipt(HopReceipt.from_bytes(data[:-65]), data[-65:])


def signed_digest(receipt: HopReceipt, domain: bytes) -> bytes:
    return keccak(domain + receipt.digest())


def sign(receipt: HopReceipt, signer: Signer, domain: bytes) -> SignedReceipt:
    if receipt.node.lower() != signer.address.lower():
        raise ProtocolError(f"receipt names node {receipt.node}; this key is {signer.address}")
    return SignedReceipt(receipt, signer.sign_hash(signed_digest(receipt, domain)))


def check_replica(receipts: Sequence[SignedReceipt], route: Sequence[Hop], job_id: int, replica: int,
                  output_hash: bytes, steps: int, domain: bytes) -> bytes:
    """Check a replica's signed receipts against its served ``route`` and output; return the receipts root.

    Each receipt must be signed by the node it names, which is the node the route
    serves at its position, over the route's span, for this job, replica and
    output, with one chunk per 32 steps of ``steps``.
    """
    if len(receipts) != len(route):
        raise ProtocolError(f"job {job_id} replica {replica}: {len(receipts)} receipts for {len(route)} served hops")
    for i, (s, h) in enumerate(zip(receipts, route)):
        r = s.receipt
        if (int(r.job_id), r.replica, r.hop, r.node.lower(), r.start, r.end) != (
                job_id, replica, i, h.node.lower(), h.start, h.end):
            raise ProtocolError(f"job {job_id} replica {replica}: receipt {i} names job {r.job_id} replica "
                                f"{r.replica} hop {r.hop} node {r.node} [{r.start}, {r.end}); the route serves "
                                f"{h.node} [{h.start}, {h.end}) there")
        if s.signer(domain).lower() != h.node.lower():
            raise ProtocolError(f"job {job_id} replica {replica}: receipt {i} is not signed by {h.node}")
        if r.output_hash != output_hash:
            raise ProtocolError(f"job {job_id} replica {replica}: hop {i}'s receipt names another output")
        if len(r.chunks) != num_chunks(steps):
            raise ProtocolError(f"job {job_id} replica {replica}: hop {i}'s receipt has {len(r.chunks)} chunks "
                                f"for {steps} steps")
    return receipts_root([s.receipt for s in receipts])
