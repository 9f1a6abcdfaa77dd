"""Which chain a node's saved state belongs to.

A node's cursor and job ledger are only meaningful on the chain and deployment they were written
for. A restarted devnet reuses the chain id and, with the same deployer nonce, the same contract
addresses, so those alone cannot tell two chains apart; the genesis block's hash can. The state
folder carries a stamp of all three (``chain.json``) and start-up refuses a folder stamped for
another chain instead of resuming its jobs.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from web3 import Web3

from chain.deploy import Deployment
from proto.errors import ConfigError

STAMP = "chain.json"


@dataclass(frozen=True)
class ChainIdentity:
    chain_id: int
    genesis_hash: str  # 0x hex of block 0
    model_registry: str
    node_registry: str
    job_market: str

    @property
    def key(self) -> str:
        """A short folder name that differs between chains and deployments."""
        return f"{self.chain_id}-{self.job_market[2:10].lower()}-{self.genesis_hash[2:10]}"

    @classmethod
    def of(cls, w3: Web3, dep: Deployment) -> "ChainIdentity":
        genesis = "0x" + bytes(w3.eth.get_block(0)["hash"]).hex()
        return cls(dep.chain_id, genesis, dep.model_registry, dep.node_registry, dep.job_market)


def claim(state_dir: Path, ident: ChainIdentity) -> None:
    """Stamp an empty or matching state folder for ``ident``; refuse one written for another chain."""
    path = Path(state_dir) / STAMP
    if path.is_file():
        try:
            old = ChainIdentity(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path} is not a chain stamp ({exc}); move the folder away and restart") from None
        if old != ident:
            diff = ", ".join(f"{k} {getattr(old, k)} -> {getattr(ident, k)}" for k in asdict(ident)
                             if getattr(old, k) != getattr(ident, k))
            raise ConfigError(f"node state in {state_dir} belongs to another chain or deployment ({diff}); "
                              "its cursor and job ledger must not be resumed here: set another `state_dir` "
                              "in node.toml (or leave it unset to get one per chain) or delete that folder")
        return
    if any(p.name != STAMP for p in Path(state_dir).iterdir()):
        raise ConfigError(f"{state_dir} holds node state without a chain stamp (written by an older version); "
                          "move it away or delete it, then restart")
    path.write_text(json.dumps(asdict(ident), indent=1))


def lock(state_dir: Path):
    """Hold ``state_dir/daemon.lock`` for this process's life; refuse a second daemon of the same
    node (it would share the cursor and ledger and serve a port the chain does not name)."""
    path = Path(state_dir) / "daemon.lock"
    f = open(path, "a+")  # noqa: SIM115 - held open until the process exits
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise ConfigError(f"another daemon for this node already runs (pid {pid}, lock {path}); stop it first, "
                          "or give this one another key") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
