"""Where Tessera keeps its state on disk.

``TESSERA_HOME`` (default ``~/.tessera``) holds:

* ``models/<name>/``   converted model directories with ``manifest.json``
* ``keys/``            encrypted node keystores
* ``devnet/``          anvil pid, log and state of ``tessera chain up``
* ``deployment.json``  chain id, contract addresses, deployment block
* ``nodes/<addr>/``    per-node state (event cursor, sessions)

The Makefile sets ``TESSERA_HOME`` to ``.tessera`` inside the repository so that
``make demo`` and ``make test`` leave nothing outside it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    p = Path(os.environ.get("TESSERA_HOME", Path.home() / ".tessera")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def models_dir() -> Path:
    p = home() / "models"
    p.mkdir(parents=True, exist_ok=True)
    return p


def deployment_file() -> Path:
    return Path(os.environ.get("TESSERA_DEPLOYMENT", home() / "deployment.json"))


def node_modules_bin(tool: str) -> Path:
    """Path of a native binary shipped by the pinned npm packages (anvil, forge)."""
    return REPO_ROOT / "node_modules" / "@foundry-rs" / f"{tool}-linux-amd64" / "bin" / tool
