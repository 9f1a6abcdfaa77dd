"""A node's endpoint as registered on chain (:func:`proto.channel.open_channel` dials it).

``host:port`` is plaintext gRPC. ``host:port#tls=<sha256>`` is gRPC over TLS with the node's
self-signed certificate pinned by the SHA-256 of its DER bytes: the fingerprint is part of the
registered endpoint, so a peer trusts exactly the certificate the node's operator staked on,
and no certificate authority is involved. The dialer fetches the certificate once, checks its
fingerprint, and then uses it as the only trusted root: the TLS handshake proves the peer holds
its private key, so a man in the middle between the fetch and the call cannot take part.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass

from proto.errors import ProtocolError

TLS_NAME = "tessera-node"  # the name in every node certificate; the pin is the fingerprint, not the name
FETCH_TIMEOUT_S = 5.0
_FP = re.compile(r"[0-9a-f]{64}")
_MAX_ENDPOINT = 255  # NodeRegistry bounds the string too


@dataclass(frozen=True)
class Endpoint:
    address: str  # host:port
    fingerprint: str | None = None  # lower-case hex SHA-256 of the DER certificate; None = plaintext

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        if not isinstance(text, str) or not 0 < len(text) <= _MAX_ENDPOINT:
            raise ProtocolError(f"endpoint {str(text)[:80]!r} is not 1..{_MAX_ENDPOINT} characters")
        address, sep, tail = text.partition("#")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ProtocolError(f"endpoint {text[:80]!r} is not HOST:PORT")
        if not sep:
            return cls(address)
        fp = tail.removeprefix("tls=").lower()
        if not tail.startswith("tls=") or not _FP.fullmatch(fp):
            raise ProtocolError(f"endpoint {text[:80]!r}: after '#' comes tls=<64 hex digits>, the SHA-256 of the "
                                "node's certificate (`tessera operator tls` prints it)")
        return cls(address, fp)

    def __str__(self) -> str:
        return self.address if self.fingerprint is None else f"{self.address}#tls={self.fingerprint}"


def fingerprint(cert_pem: str | bytes) -> str:
    """Hex SHA-256 of a PEM certificate's DER bytes."""
    pem = cert_pem.decode() if isinstance(cert_pem, bytes) else cert_pem
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def pinned_certificate(ep: Endpoint, timeout_s: float = FETCH_TIMEOUT_S) -> bytes:
    """The peer's certificate (PEM), fetched and checked against the endpoint's fingerprint."""
    host, _, port = ep.address.rpartition(":")
    try:
        pem = ssl.get_server_certificate((host.strip("[]"), int(port)), timeout=timeout_s)
    except (OSError, ssl.SSLError) as exc:
        raise ProtocolError(f"cannot fetch the TLS certificate of {ep.address}: {exc}") from exc
    got = fingerprint(pem)
    if got != ep.fingerprint:
        raise ProtocolError(f"{ep.address} presented a certificate with fingerprint {got[:16]}.., not the "
                            f"{ep.fingerprint[:16]}.. registered for it; refusing to talk to it")
    return pem.encode()
