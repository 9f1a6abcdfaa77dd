"""Where a snapshot comes from: a JSON file (offline) or the chain plus live probes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

from chain.client import TesseraChain
from chain.deploy import load_deployment
from proto.errors import ConfigError, ContractError, RoutingError
from router.types import Snapshot
from router.view import NetworkView, grpc_prober

logger = logging.getLogger(__name__)

Source = Callable[[str], Snapshot]  # model name -> snapshot


def file_source(path: str | Path) -> Source:
    """Snapshots read from a JSON file: one snapshot, or ``{"snapshots": [...]}``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"snapshot file {p} does not exist") from None
    except ValueError as exc:
        raise ConfigError(f"snapshot file {p} is not JSON ({exc})") from None
    snaps = [Snapshot.from_json(d) for d in (data["snapshots"] if "snapshots" in data else [data])]
    by_model = {s.model: s for s in snaps}

    def get(model: str) -> Snapshot:
        if model not in by_model:
            raise ConfigError(f"snapshot file {p} has no model {model!r}; it has {sorted(by_model)}")
        return by_model[model]

    return get


def client_source(chain: TesseraChain, ttl_s: float = 30.0, probe: bool = True) -> Source:
    """Nodes from the NodeRegistry of ``chain``'s deployment, probed over gRPC."""
    views: dict[str, NetworkView] = {}

    def get(model: str) -> Snapshot:
        if model not in views:
            views[model] = NetworkView(
                chain.list_nodes, lambda m: _num_blocks(chain, m),
                prober=grpc_prober() if probe else None, ttl_s=ttl_s,
            )
        return views[model].snapshot(model)

    return get


def _num_blocks(chain: TesseraChain, model: str) -> int:
    try:
        return chain.get_model(model).num_blocks
    except ContractError as exc:
        if exc.name != "ModelUnknown":
            raise
        raise RoutingError(f"model {model!r} is not registered on this chain; check the name") from None


def chain_source(rpc_url: str | None = None, ttl_s: float = 30.0, probe: bool = True) -> Source:
    """Nodes from the NodeRegistry (via the deployment file), probed over gRPC."""
    dep = load_deployment()
    rpc = rpc_url or os.environ.get("TESSERA_RPC_URL") or dep.rpc_url or "http://127.0.0.1:8545"
    logger.info("router reads the network from %s", rpc)
    return client_source(TesseraChain.connect(rpc, dep), ttl_s, probe)


def make_source(snapshot: str | None, rpc_url: str | None = None, probe: bool = True) -> Source:
    """``--snapshot FILE`` if given, else the chain."""
    return file_source(snapshot) if snapshot else chain_source(rpc_url, probe=probe)
