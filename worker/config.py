"""Configuration of one worker node (pydantic; loadable from TOML).

Every field has a default and a comment with its unit. Precedence: defaults,
then the TOML file (``[worker]`` table or top level), then command-line flags.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proto.errors import ConfigError

logger = logging.getLogger(__name__)


class WorkerConfig(BaseModel):
    """Settings of the gRPC worker (the `[worker]` table of node.toml; `[node]` is `worker.node.config.NodeConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- what to serve
    model_dir: str | None = None  # local model directory (HF layout); None = resolve by name
    model: str = "smollm2-135m"  # model name as registered on chain
    start: int = Field(0, ge=0)  # first block served (inclusive)
    end: int | None = None  # block after the last served (exclusive); None = to the end
    device: str = "cpu"  # torch device: "cpu", "cuda", "cuda:1"
    dtype: str = "float32"  # torch dtype of the stage: float32, float16, bfloat16
    threads: int = Field(1, ge=1)  # torch intra-op threads, count
    # block weights in memory: "fp32" (as stored, cast to dtype) or "int8-mixed" (Linear weights in int8 with
    # 16-bit outlier features: ~0.4x the memory, outputs close to but not bit-equal with fp32 replicas). Not yet
    # advertised on chain: a planner cannot tell int8 nodes apart until verification work adds that.
    weights: Literal["fp32", "int8-mixed"] = "fp32"

    # --- network
    host: str = "127.0.0.1"  # interface the gRPC server binds to
    port: int = Field(50051, ge=0, le=65535)  # gRPC port; 0 = pick a free one
    grpc_workers: int = Field(16, ge=1)  # gRPC handler threads, count (bounds concurrent streams)
    max_message_bytes: int = Field(64 << 20, ge=1024)  # largest gRPC message, bytes

    # --- identity
    key_file: str | None = None  # node key: raw hex file or eth keystore JSON
    private_key: str | None = None  # node key as 0x hex (tests only; prefer key_file)

    # --- sessions
    session_ttl_s: float = Field(300.0, gt=0)  # idle session lifetime, seconds
    session_max_bytes: int = Field(2 << 30, ge=0)  # KV memory cap over all sessions, bytes
    max_sessions: int = Field(64, ge=1)  # open sessions at once, count

    # --- codec
    max_payload_bytes: int = Field(256 << 20, ge=1)  # largest accepted activation payload, bytes
    hop_timeout_s: float = Field(60.0, gt=0)  # wait for the next hop's answer, seconds

    # --- fault injection (demo and tests only)
    byzantine: bool = False  # corrupt outgoing activations (and the tail's logits)
    byzantine_noise: float = Field(50.0, ge=0)  # std of the added Gaussian noise, activation units

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "WorkerConfig":
        """Load ``path`` (a ``[worker]`` table or top-level keys), then apply non-None overrides."""
        p = Path(path).expanduser()
        try:
            data = tomllib.loads(p.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read worker config {p}: {exc}") from exc
        data = data.get("worker", data)
        return cls.build(**{**data, **overrides})

    @classmethod
    def build(cls, **values: Any) -> "WorkerConfig":
        """Validate ``values`` (None values are dropped) into a config with a friendly error."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(f"invalid worker config: {exc}") from exc
