"""Configuration of one worker node (pydantic; the ``[worker]`` table of node.toml).

Every field has a default and a description with its unit; the description is
also the help of the field's flag on ``tessera operator run`` (``session_ttl_s``
-> ``--session-ttl-s``), which generates one flag per field. Precedence:
defaults, then the ``[worker]`` table, then flags.

``weights = "int8-mixed"`` must match what the node advertises on chain
(``tessera operator register --weights int8``): a job's execution spec says
whether it accepts int8-mixed weights, since int8 and fp32 replicas do not
produce bit-equal outputs, and the daemon refuses to start an int8-mixed node
registered as running exact weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proto import paths
from proto.errors import ConfigError

logger = logging.getLogger(__name__)

ENVELOPE_BYTES = 64 << 10  # room a hop message needs besides its activations, bytes


class WorkerConfig(BaseModel):
    """Settings of the gRPC worker (the `[worker]` table of node.toml; `[node]` is `worker.node.config.NodeConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- what to serve
    model_dir: str | None = Field(None, description="local model directory (HF layout); unset: find the model by name")
    model: str = Field("smollm2-135m", description="model name as registered on chain")
    start: int = Field(0, ge=0, description="first block served (inclusive)")
    end: int | None = Field(None, description="block after the last served (exclusive); unset: to the end")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1")
    dtype: str = Field("float32", description="torch dtype of the stage: float32, float16, bfloat16")
    threads: int = Field(1, ge=1, description="torch intra-op threads, count")
    loader: str = Field("worker.shard:load_stage", description="what loads the span: module:function or "
                        "path/file.py:function, called as f(model_dir, start, end, device=, dtype=)")
    # Advertised on chain as the node's capabilities (CAP_EXACT / CAP_INT8); checked against them at start.
    weights: str = Field("fp32", pattern=r"^(fp32|int8-mixed)$", description="block weights in memory: fp32 (as "
                         "stored, in dtype) or int8-mixed (Linear weights in int8 with 16-bit outlier features: about "
                         "0.4x the memory; outputs close to, not bit-equal with, fp32 replicas)")

    # --- network
    host: str = Field("127.0.0.1", description="interface the gRPC server binds to")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    max_message_bytes: int = Field(64 << 20, ge=1 << 20, description="largest gRPC message, bytes")
    stream_idle_s: float = Field(10.0, gt=0, description="a stream with no live session is ended after this "
                                 "long without a message, seconds")
    max_idle_streams: int = Field(64, ge=1, description="streams with no live session held at once, count; past "
                              "it the oldest is ended")
    max_idle_streams_per_peer: int = Field(16, ge=1, description="streams with no live session held at once for "
                                           "one peer address, count; past it that peer's oldest is ended")
    max_subscribers: int = Field(16, ge=1, description="token-stream subscribers (StreamService) served at once, "
                                 "count; each holds a handler thread of its own")
    tls: bool = Field(False, description="serve gRPC over TLS with this node's self-signed certificate; register "
                      "the endpoint as HOST:PORT#tls=<fingerprint> (`tessera operator register --tls` does)")
    tls_dir: str | None = Field(None, description="where the node's TLS certificate and key live (made on first "
                                "use); unset: $TESSERA_HOME/tls/<node address>")
    metrics: bool = Field(True, description="serve /metrics (Prometheus) and /health over HTTP (on-chain nodes)")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="HTTP port of /metrics and /health; unset: "
                                     "the gRPC port + 1000 (a free one when that is 0 or past 65535)")

    def tls_path(self, address: str) -> Path:
        """The folder of this node's TLS certificate and key."""
        return Path(self.tls_dir).expanduser() if self.tls_dir else paths.home() / "tls" / address.lower()

    def http_port(self, grpc_port: int) -> int:
        """The port /metrics and /health bind: ``metrics_port``, else the gRPC port + 1000."""
        if self.metrics_port is not None:
            return self.metrics_port
        return grpc_port + 1000 if 0 < grpc_port + 1000 <= 65535 and self.port else 0

    # --- identity (the on-chain daemon signs with the [node] key instead)
    key_file: str | None = Field(None, description="node key file, raw hex or eth keystore JSON (with --plan-file)")
    private_key: str | None = Field(None, description="node key as 0x hex (tests only; prefer key_file)")

    # --- sessions
    session_ttl_s: float = Field(300.0, gt=0, description="idle session lifetime, seconds (a session also "
                                 "ends at its job's commit deadline)")
    session_max_bytes: int = Field(2 << 30, ge=0, description="memory cap over all sessions (caches, and each "
                                   "step's work reserved before it runs), bytes")
    max_sessions: int = Field(64, ge=1, description="open sessions at once, count (one stream each)")
    open_window_s: float = Field(60.0, gt=0, description="an OPEN sent further than this from this node's clock "
                                 "is refused as stale, seconds")

    # --- batching (worker.scheduler)
    max_batch: int = Field(64, ge=1, description="decode steps of concurrent sessions run as one forward, at most "
                           "this many, count; 1: each session's steps run on its own thread, unbatched")
    batch_window_ms: float = Field(5.0, ge=0, description="how long a decode step waits for the rest of the "
                                   "sessions it ran with last time, milliseconds")
    prompt_chunk_tokens: int = Field(128, ge=0, description="prompts bound for a next hop run in forwards of at "
                                     "most this many positions together, so that the next stage starts on the first "
                                     "while this one runs the rest, count; 0: every prompt waiting runs in one forward")

    # --- codec
    max_payload_bytes: int | None = Field(None, ge=1, description="largest accepted activation payload, bytes; "
                                          "unset: max_message_bytes less 64 KiB of envelope")
    hop_timeout_s: float = Field(60.0, gt=0, description="wait for the next hop's answer to one message, seconds; "
                                 "a peer silent for longer is given up")

    # --- fault injection (demo and tests only)
    byzantine: bool = Field(False, description="corrupt outgoing activations and the tail's logits (demo only)")
    byzantine_noise: float = Field(50.0, ge=0, description="std of the noise byzantine mode adds, activation units")
    byzantine_frame: bool = Field(False, description="with byzantine: corrupt what is sent but sign a receipt of "
                                  "the honest output, to frame the next hop (tests only)")

    @model_validator(mode="after")
    def _payload_fits_a_message(self) -> "WorkerConfig":
        if self.max_payload_bytes is None:
            object.__setattr__(self, "max_payload_bytes", self.max_message_bytes - ENVELOPE_BYTES)
        elif self.max_payload_bytes + ENVELOPE_BYTES > self.max_message_bytes:
            raise ValueError(f"max_payload_bytes ({self.max_payload_bytes}) must leave {ENVELOPE_BYTES} bytes of "
                             f"envelope inside max_message_bytes ({self.max_message_bytes}), or it can never apply")
        return self

    @classmethod
    def build(cls, **values: Any) -> "WorkerConfig":
        """Validate ``values`` (None values are dropped) into a config with a friendly error."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(f"invalid [worker] setting: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """pydantic's errors in one line each: ``field: what is wrong (got value)``, no URLs."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "value"
        got = f" (got {e['input']!r})" if e.get("type") != "missing" and not isinstance(e.get("input"), dict) else ""
        parts.append(f"{where}: {e['msg'][:1].lower() + e['msg'][1:]}{got}")
    return "; ".join(parts)
