"""The gRPC channel to a registered endpoint (see :mod:`proto.endpoint` for the format)."""

from __future__ import annotations

import grpc

from proto.endpoint import TLS_NAME, Endpoint, pinned_certificate


def open_channel(endpoint: str, options: list[tuple] | tuple = ()) -> grpc.Channel:
    """A channel to a registered endpoint: plaintext, or TLS pinned to the registered certificate."""
    ep = Endpoint.parse(endpoint)
    if ep.fingerprint is None:
        return grpc.insecure_channel(ep.address, options=list(options))
    creds = grpc.ssl_channel_credentials(root_certificates=pinned_certificate(ep))
    return grpc.secure_channel(ep.address, creds, options=[*options, ("grpc.ssl_target_name_override", TLS_NAME)])
