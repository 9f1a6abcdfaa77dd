"""Signatures on hop messages with the node's Ethereum key (eth-account).

The digest of a :class:`HopMessage` is ``keccak256(abi.encode(domain, jobId,
replica, hop, step, kind, upstream, payloadHash, ids, keccak(output),
keccak(error), sender, session, sentUnixMs, route))`` where ``domain`` is
:func:`worker.wire.domain_separator` of the chain id and the JobMarket address;
``payloadHash`` covers the payload and any extra activations
(:func:`worker.ring.link.payload_digest`). The signature is EIP-191
(``personal_sign``) over that 32-byte digest, so it can
never pass for a transaction signature. Every field except the signature itself
is covered, so a message cannot be edited, moved to another deployment, job,
hop, step or session, or turned around into the other direction. Only low-s
signatures (EIP-2) are accepted, so a signature has exactly one valid form.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import coincurve
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from proto.errors import ConfigError, ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from worker import wire

logger = logging.getLogger(__name__)

EIP191_PREFIX = b"\x19Ethereum Signed Message:\n32"
ZERO32 = b"\x00" * 32
TYPES = ["bytes32", "uint256", "uint256", "uint256", "uint256", "uint8", "bool", "bytes32",
         "uint256[]", "bytes32", "bytes32", "address", "bytes32", "uint64", "uint64"]  # what ``digest`` abi-encodes, in order
_IDS_OFFSET = (32 * len(TYPES)).to_bytes(32, "big")  # the one dynamic value follows the 15 head words
_KECCAK_EMPTY = keccak(b"")  # output and error are empty on most messages
HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0  # secp256k1 order / 2: the low-s bound


def digest(msg: pb.HopMessage, domain: bytes) -> bytes:
    """The 32-byte digest a sender signs (all fields but ``signature``) under ``domain``
    (:func:`worker.wire.domain_separator`).

    ``abi.encode`` of :data:`TYPES` written out by hand: it runs four times per
    hop per token, and eth_abi's general encoder costs 40 us where this costs 5.
    ``tests/unit/test_signing.py`` checks it against eth_abi byte for byte.
    """
    job = wire.job_id(msg.job_id)
    if len(msg.payload_hash) not in (0, 32) or len(msg.session) not in (0, 32):
        raise wire.MessageError(f"payload_hash and session must be 32 bytes, got {len(msg.payload_hash)} and "
                                f"{len(msg.session)}")
    sender = _address_bytes(msg.sender)
    ids = msg.ids
    head = b"".join((domain, job.to_bytes(32, "big"), _word(msg.replica), _word(msg.hop), _word(msg.step),
                     _word(int(msg.kind)), _word(int(msg.upstream)), msg.payload_hash or ZERO32, _IDS_OFFSET,
                     _hash(msg.output), _hash(msg.error.encode()), bytes(12) + sender, msg.session or ZERO32,
                     _word(msg.sent_unix_ms), _word(msg.route), _word(len(ids))))
    return keccak(head + b"".join(_word(i) for i in ids))


def _hash(b: bytes) -> bytes:
    return keccak(b) if b else _KECCAK_EMPTY


def _word(v: int) -> bytes:
    return v.to_bytes(32, "big")


def _address_bytes(address: str) -> bytes:
    """The 20 bytes of a ``0x``-prefixed hex address; ProtocolError if it is not one."""
    if len(address) != 42 or address[:2] not in ("0x", "0X"):
        raise ProtocolError(f"sender {wire.safe(address, 50)!r} is not a 0x-prefixed 20-byte hex address")
    try:
        raw = bytes.fromhex(address[2:])
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise ProtocolError(f"sender {wire.safe(address, 50)!r} is not a 0x-prefixed 20-byte hex address")
    return raw


def _eip191(d: bytes) -> bytes:
    """The hash ``personal_sign`` signs for a 32-byte message (eth-account's encode_defunct)."""
    return keccak(EIP191_PREFIX + d)


class Signer:
    """A node key that signs hop messages in place.

    Signatures are ``r || s || v`` with ``v`` in {27, 28}, exactly what
    eth-account's ``sign_message(encode_defunct(primitive=digest))`` returns
    (RFC 6979 nonces, low ``s``), computed with libsecp256k1 through coincurve:
    this runs twice per hop per token.
    """

    def __init__(self, private_key: str | bytes):
        account = Account.from_key(private_key)
        self._key = coincurve.PrivateKey(bytes(account.key))
        self.address = account.address

    def sign(self, msg: pb.HopMessage, domain: bytes) -> pb.HopMessage:
        """Set ``sender`` and ``signature`` (under ``domain``) on ``msg`` and return it."""
        msg.sender = self.address
        msg.ClearField("signature")
        msg.signature = self.sign_hash(digest(msg, domain))
        return msg

    def sign_hash(self, d: bytes) -> bytes:
        """The 65-byte EIP-191 signature of the 32-byte message ``d`` (already domain-bound by the caller)."""
        sig = self._key.sign_recoverable(_eip191(d), hasher=None)  # r || s || recovery id
        return sig[:64] + bytes([sig[64] + 27])


def recover_bytes(msg: pb.HopMessage, domain: bytes) -> bytes:
    """The 20-byte address that signed ``msg`` under ``domain``; raise ProtocolError if the
    signature is invalid or not in its low-s form."""
    return recover_hash(digest(msg, domain), msg.signature, "hop message")


def recover_hash(d: bytes, sig: bytes, what: str = "message") -> bytes:
    """The 20-byte address whose EIP-191 signature of the 32-byte ``d`` is ``sig``; ProtocolError
    (naming ``what``) if it is invalid or not in its low-s form."""
    if len(sig) != 65 or sig[64] not in (27, 28):
        raise ProtocolError(f"{what} is unsigned or its signature is malformed ({len(sig)} bytes)")
    if int.from_bytes(sig[32:64], "big") > HALF_N:
        raise ProtocolError(f"{what} signature has a high s value; only low-s (EIP-2) signatures are accepted")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(sig[:64] + bytes([sig[64] - 27]), _eip191(d),
                                                             hasher=None)
    except Exception as exc:
        raise ProtocolError(f"invalid signature on {what}: {exc}") from exc
    return keccak(pub.format(compressed=False)[1:])[-20:]


def recover(msg: pb.HopMessage, domain: bytes) -> str:
    """Checksummed address that signed ``msg``; raise ProtocolError if the signature is invalid."""
    return _checksum(recover_bytes(msg, domain))


def recover_sender(msg: pb.HopMessage, domain: bytes) -> bytes:
    """The 20 bytes of the address that signed ``msg``, which must be the ``sender`` it claims."""
    signer = recover_bytes(msg, domain)
    if signer != _address_bytes(msg.sender):
        raise ProtocolError(f"message claims sender {wire.safe(msg.sender, 50)} but was signed by {_checksum(signer)}")
    return signer


def _checksum(addr: bytes) -> str:
    return to_checksum_address(addr)


def verify(msg: pb.HopMessage, expected: str, domain: bytes) -> None:
    """Raise ProtocolError unless ``msg`` was signed by ``expected`` under ``domain`` and says so."""
    signer = recover_sender(msg, domain)
    if signer != _address_bytes(expected):
        raise ProtocolError(f"message from {_checksum(signer)}, but the plan names {expected} at hop {msg.hop}")


_verifier: ThreadPoolExecutor | None = None
_verifier_lock = threading.Lock()


class PendingCheck:
    """A signature check overlapped with the compute that runs on the message.

    ``start()`` hands :func:`verify` to this process's verifier thread; call it
    right before the stage runs, when the thread mostly waits inside torch ops
    and the check does not compete with it for the GIL. ``result()`` waits for
    it (or checks here and now if it never started) and raises its
    ProtocolError; call it before anything derived from the message leaves the
    process, so nothing unverified is ever forwarded, answered or returned.
    """

    def __init__(self, msg: pb.HopMessage, expected: str, domain: bytes):
        self.msg, self.expected, self.domain = msg, expected, domain
        self._future: Future | None = None
        self._passed = False
        self.seconds = 0.0  # how long the check took, wherever it ran

    def _check(self) -> None:
        t0 = time.perf_counter()
        try:
            verify(self.msg, self.expected, self.domain)
        finally:
            self.seconds = time.perf_counter() - t0

    def start(self) -> None:
        global _verifier
        if self._future is None and not self._passed:
            with _verifier_lock:
                if _verifier is None:
                    _verifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hop-verify")
            self._future = _verifier.submit(self._check)

    def result(self) -> None:
        if self._passed:
            return
        if self._future is None:
            self._check()
        else:
            self._future.result()
        self._passed = True


def load_key(key_file: str | Path | None = None, private_key: str | None = None) -> Signer:
    """A signer from a raw hex key, a file holding one, or an eth keystore JSON.

    A keystore's password comes from ``TESSERA_KEY_PASSWORD`` (empty if unset).
    """
    if private_key:
        return Signer(private_key)
    if not key_file:
        raise ConfigError("no node key: pass --key-file PATH or --private-key 0x...")
    path = Path(key_file).expanduser()
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc}") from exc
    try:
        if text.startswith("{"):
            password = os.environ.get("TESSERA_KEY_PASSWORD", "")
            return Signer(Account.decrypt(json.loads(text), password))
        return Signer(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"key file {path} holds no usable key ({exc}); for a keystore set "
                          "TESSERA_KEY_PASSWORD") from exc
