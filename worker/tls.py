"""A node's TLS identity: a self-signed certificate whose fingerprint is published with its endpoint.

Created on first use in ``[worker] tls_dir`` (``cert.pem`` and ``key.pem``, the key readable by its
owner only) and reused after, so the fingerprint registered on chain stays valid across restarts.
See :mod:`proto.endpoint` for how peers pin it.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from proto.endpoint import TLS_NAME, fingerprint

CERT, KEY = "cert.pem", "key.pem"
VALID_DAYS = 3650  # the pin is the fingerprint; expiry would only break a registered endpoint


def identity(tls_dir: str | Path) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) in ``tls_dir``, created there if missing."""
    d = Path(tls_dir).expanduser()
    if (d / CERT).is_file() and (d / KEY).is_file():
        return (d / KEY).read_bytes(), (d / CERT).read_bytes()
    key_pem, cert_pem = _self_signed()
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / KEY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    (d / CERT).write_bytes(cert_pem)
    return key_pem, cert_pem


def endpoint_fingerprint(tls_dir: str | Path) -> str:
    """The fingerprint to register with the endpoint (``host:port#tls=<this>``)."""
    return fingerprint(identity(tls_dir)[1])


def _self_signed() -> tuple[bytes, bytes]:
    # lazy: optional package, needed only by nodes that serve TLS
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(TLS_NAME)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
