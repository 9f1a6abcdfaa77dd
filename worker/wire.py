"""Bounds on every field of a hop message, checked before anything else reads it.

A hop message comes from anyone who can reach the port, so each field is
checked here, with no lookup, signature or decode before it: a field out of
bounds is refused with :class:`MessageError` (gRPC INVALID_ARGUMENT) and a
one-line message. :func:`safe` makes untrusted text fit for a log line or an
error message. The domain separator that binds signatures to one chain and
JobMarket lives here too, below both signing and the plan views.
"""

from __future__ import annotations

import functools
import math

from eth_hash.auto import keccak

from proto.errors import TesseraError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import Codec

MAX_JOB_ID_DIGITS = 78  # 2**256 - 1 has 78 decimal digits
MAX_DIMS = 8  # dimensions of an activation tensor
MAX_DIM = 1 << 31  # elements along one dimension
MAX_BLOCK = 1 << 20  # codec block size, values (as worker.codec.MAX_BLOCK)
MAX_IDS = 1 << 16  # ids in one answer (class ids of a batch), count
MAX_OUTPUT_BYTES = 4 << 20  # a tail's canonical output, bytes
MAX_ERROR_CHARS = 1024  # an answer's error text, characters
MAX_EXTRAS = 16  # extra activations of one step (tensors that skip across a cut), count
NONCE_BYTES = 32  # a session nonce, bytes
MAX_RECEIPTS = 64  # signed hop receipts on one CLOSE or in one GetReceipts answer (hops of a replica)
MAX_RECEIPT_BYTES = 1 << 18  # one receipt's canonical bytes (about 970 chunks: 31,000 generated tokens)
KINDS = (pb.KIND_OPEN, pb.KIND_STEP, pb.KIND_CLOSE)
CODECS = frozenset(int(c) for c in Codec)
ZERO_ADDRESS = "0x" + "00" * 20
DOMAIN_TYPEHASH = keccak(b"tessera.v1.HopMessage(uint256 chainId,address jobMarket)")


class MessageError(TesseraError):
    """A field of a hop message is malformed or out of bounds; the sender must fix its message."""


def safe(value: object, limit: int = 80) -> str:
    """``value`` as one printable line of at most about ``limit`` characters (control characters
    escaped, the rest cut with a note of the full length): fit for a log line or an error text."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return repr(text[:limit])[1:-1] + f"...({len(text)} chars)"
    return text if text.isprintable() else repr(text)[1:-1]


def job_id(text: str) -> int:
    """The job id of a message: 1 to 78 ASCII digits, below 2**256."""
    if not 0 < len(text) <= MAX_JOB_ID_DIGITS or not text.isascii() or not text.isdigit():
        raise MessageError(f"job_id {safe(text, 40)!r} is not a decimal uint256 (1 to 78 ASCII digits)")
    value = int(text)
    if value >= 1 << 256:
        raise MessageError(f"job_id {text} is not a uint256")
    return value


@functools.lru_cache(maxsize=64)
def domain_separator(chain_id: int, market: str) -> bytes:
    """``keccak256(abi.encode(DOMAIN_TYPEHASH, chainId, jobMarket))``: every hop signature covers it,
    so a signature made for one deployment is worthless on any other."""
    addr = bytes.fromhex(market[2:])
    if len(addr) != 20 or not 0 <= chain_id < 1 << 256:
        raise MessageError(f"bad signing domain: chain {chain_id}, JobMarket {safe(market)}")
    return keccak(DOMAIN_TYPEHASH + chain_id.to_bytes(32, "big") + bytes(12) + addr)


def rows(shape) -> int:
    """Rows of an activation tensor of ``shape``: tokens (times batch) for ``(B, T, C)``."""
    return math.prod(int(s) for s in shape[:-1]) if len(shape) > 1 else 1


def check_request(msg: pb.HopMessage, max_payload_bytes: int) -> int:
    """Refuse a request whose fields are malformed or out of bounds; return its job id."""
    job = job_id(msg.job_id)
    where = f"job {job} step {msg.step}"
    if msg.kind not in KINDS:
        raise MessageError(f"{where}: message kind {msg.kind} is not OPEN, STEP or CLOSE")
    if msg.upstream:
        raise MessageError(f"{where}: an answer (upstream) was sent as a request")
    if len(msg.session) != NONCE_BYTES:
        raise MessageError(f"{where}: session nonce must be {NONCE_BYTES} bytes, got {len(msg.session)}")
    if len(msg.signature) != 65:
        raise MessageError(f"{where}: signature must be 65 bytes, got {len(msg.signature)}")
    if len(msg.sender) != 42:
        raise MessageError(f"{where}: sender {safe(msg.sender, 50)!r} is not a 0x-prefixed 20-byte hex address")
    if msg.ids or msg.output or msg.error:
        raise MessageError(f"{where}: ids, output and error belong to answers, not requests")
    if msg.route and msg.kind != pb.KIND_OPEN:
        raise MessageError(f"{where}: only OPEN names a route")
    if msg.receipts:
        if msg.kind != pb.KIND_CLOSE:
            raise MessageError(f"{where}: only CLOSE requests carry hop receipts")
        check_receipts(msg.receipts, where)
    if msg.kind == pb.KIND_OPEN and msg.step != 0:
        raise MessageError(f"{where}: OPEN must carry step 0 (a replica resumed after a failover replays its "
                           "steps from 0)")
    if msg.kind != pb.KIND_STEP:
        if msg.HasField("payload") or msg.payload_hash or msg.extras:
            raise MessageError(f"{where}: only STEP messages carry activations")
        return job
    if not msg.HasField("payload"):
        raise MessageError(f"{where}: a STEP carries no activations")
    if len(msg.extras) > MAX_EXTRAS:
        raise MessageError(f"{where}: {len(msg.extras)} extra activations; at most {MAX_EXTRAS}")
    for name, t in (("activation", msg.payload), *((f"extra activation {i}", e) for i, e in enumerate(msg.extras))):
        _check_tensor(where, name, t)
    size = len(msg.payload.data) + sum(len(e.data) for e in msg.extras)
    if size > max_payload_bytes:
        raise MessageError(f"{where}: payload of {size} bytes exceeds this node's limit of "
                           f"{max_payload_bytes} bytes")
    if len(msg.payload_hash) != 32:
        raise MessageError(f"{where}: payload_hash must be 32 bytes, got {len(msg.payload_hash)}")
    return job


def check_receipts(receipts, where: str) -> None:
    """Refuse a list of signed receipts longer or larger than the bounds."""
    if len(receipts) > MAX_RECEIPTS:
        raise MessageError(f"{where}: {len(receipts)} hop receipts; a replica has at most {MAX_RECEIPTS} hops")
    for i, r in enumerate(receipts):
        if len(r.receipt) > MAX_RECEIPT_BYTES or len(r.signature) != 65:
            raise MessageError(f"{where}: hop receipt {i} has {len(r.receipt)} bytes (at most {MAX_RECEIPT_BYTES}) "
                               f"and a {len(r.signature)}-byte signature (65)")


def _check_tensor(where: str, name: str, p: pb.Tensor) -> None:
    if p.codec not in CODECS:
        raise MessageError(f"{where}: unknown codec id {p.codec} of the {name}; valid ids are {sorted(CODECS)}")
    if not 1 <= len(p.shape) <= MAX_DIMS or not all(0 < s <= MAX_DIM for s in p.shape):
        raise MessageError(f"{where}: {name} shape must have 1 to {MAX_DIMS} positive dimensions "
                           f"(got {len(p.shape)} dimensions)")
    if not 1 <= p.block <= MAX_BLOCK:
        raise MessageError(f"{where}: codec block size {p.block} of the {name} is out of range [1, {MAX_BLOCK}]")


def check_answer(resp: pb.HopMessage) -> None:
    """Refuse an answer whose fields are out of bounds (the next hop is no more trusted than the last)."""
    if len(resp.ids) > MAX_IDS or len(resp.output) > MAX_OUTPUT_BYTES or len(resp.error) > MAX_ERROR_CHARS:
        raise MessageError(f"answer to step {resp.step} is too large ({len(resp.ids)} ids, "
                           f"{len(resp.output)} output bytes, {len(resp.error)} error characters)")
    if len(resp.signature) != 65 or len(resp.sender) != 42 or len(resp.session) != NONCE_BYTES:
        raise MessageError(f"answer to step {resp.step} has a malformed signature, sender or session nonce")
    if resp.extras:
        raise MessageError(f"answer to step {resp.step} carries extra activations; answers carry ids")
