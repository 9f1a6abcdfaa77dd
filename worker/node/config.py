"""Configuration of an operator node (``node.toml``).

A node.toml has a ``[node]`` table (this model) and a ``[worker]`` table
(:class:`worker.config.WorkerConfig`: model, span, port, device, sessions).
Environment overrides: ``TESSERA_RPC_URL``, ``TESSERA_KEY``,
``TESSERA_KEY_PASSWORD`` (see ``chain.keys``), ``TESSERA_DEPLOYMENT``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proto import paths
from proto.errors import ConfigError
from worker.config import WorkerConfig, describe


class NodeConfig(BaseModel):
    """Chain-facing settings of one node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpc_url: str | None = None  # JSON-RPC URL; None = the deployment's or the running devnet's
    ws_url: str | None = None  # WebSocket URL for new-head wake-ups (events are still read over rpc_url)
    confirmations: int = Field(0, ge=0, le=10_000)  # blocks behind the head before a job is read (reorg safety)
    deployment: str | None = None  # deployment.json path; None = $TESSERA_HOME/deployment.json
    key: str | None = None  # keystore name or 0x private key (node identity and tx sender)
    dev_account: int | None = None  # well-known devnet account index instead of key (devnets only)
    state_dir: str | None = None  # cursor + job ledger; None = $TESSERA_HOME/nodes/<chain key>/<address>
    poll_interval_s: float = Field(0.5, gt=0)  # chain polling period, seconds
    head_retries: int = Field(30, ge=1)  # attempts to run a replica from the head (within the commit window), count
    retry_backoff_s: float = Field(2.0, gt=0)  # first wait between head attempts, doubling up to 30 s, seconds
    finalize: bool = True  # tails call finalize once every replica revealed or the deadline passed (and push disputes)
    reveal_margin_s: float = Field(20.0, ge=0)  # refuse to commit unless the reveal window leaves this long, seconds
    verify_weights: bool = True  # check local weights against the ModelRegistry root at start

    def with_env(self) -> "NodeConfig":
        env = {"rpc_url": os.environ.get("TESSERA_RPC_URL"), "key": os.environ.get("TESSERA_KEY"),
               "deployment": os.environ.get("TESSERA_DEPLOYMENT")}
        return self.model_copy(update={k: v for k, v in env.items() if v and getattr(self, k) is None})

    def state_path(self, address: str, chain_key: str) -> Path:
        """Where this node keeps its cursor and ledger: ``state_dir``, or one folder per chain
        (``chain_key``, see :mod:`worker.node.state`) and address under $TESSERA_HOME/nodes."""
        if self.state_dir:
            p = Path(self.state_dir).expanduser()
        else:
            p = paths.home() / "nodes" / chain_key / address.lower()
        p.mkdir(parents=True, exist_ok=True)
        return p


def load(path: str | Path, **worker_overrides: Any) -> tuple[NodeConfig, WorkerConfig]:
    """Read a node.toml into its two halves; non-None overrides replace [worker] values."""
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no node config at {p}; write one (see README, 'Operator guide')") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"node", "worker"}
    if unknown:
        raise ConfigError(f"{p}: unknown table(s) {sorted(unknown)}; use [node] and [worker]")
    try:
        node = NodeConfig(**data.get("node", {})).with_env()
    except ValidationError as exc:
        raise ConfigError(f"{p} [node]: {describe(exc)}") from None
    overrides = {k: v for k, v in worker_overrides.items() if v is not None}
    try:
        worker = WorkerConfig.build(**{**data.get("worker", {}), **overrides})
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    return node, worker
