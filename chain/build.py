"""Build the contracts with forge, the one build path; settings in ``contracts/foundry.toml``.

``python -m chain.build [--force]`` runs ``forge build`` in ``contracts/`` (solcjs through
``solc-shim``, offline). Forge's cache recompiles only what changed and writes its standard
artifacts to ``contracts/out/<File>.sol/<Contract>.json``; ``bash contracts/test.sh`` runs
``forge test`` over the same settings, cache and artifacts. The ``*.t.sol`` tests are left
to ``forge test``; helpers in ``test/`` (``ReentrantPayout.sol``) are built here.
:func:`load_artifact` builds first when a source changed since the last build (a digest of
sources and settings in ``contracts/out/.sources``), so Python never deploys stale bytecode.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from proto.errors import ChainError
from proto.paths import REPO_ROOT, node_modules_bin

logger = logging.getLogger(__name__)

CONTRACTS_DIR = REPO_ROOT / "contracts"
CONTRACT_NAMES = ("ModelRegistry", "NodeRegistry", "Disputes", "JobMarket")
BUILD_TIMEOUT_S = 600  # a cold build takes seconds; this bounds a hung compiler (or a build we wait on)


def out_dir() -> Path:
    return CONTRACTS_DIR / "out"


def _digest() -> str:
    """Hash of what ``forge build --skip test`` reads: sources, test helpers and settings."""
    files = [*CONTRACTS_DIR.glob("src/**/*.sol"), *CONTRACTS_DIR.glob("test/**/*.sol"), CONTRACTS_DIR / "foundry.toml"]
    h = hashlib.sha256()
    for p in sorted(f for f in files if not f.name.endswith(".t.sol")):
        h.update(p.relative_to(CONTRACTS_DIR).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def _lock():
    """One build at a time per checkout (node processes of a dev cluster may all find sources changed)."""
    path = CONTRACTS_DIR / "cache" / "build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    with open(path, "w") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ChainError(f"another build has held {path} for {BUILD_TIMEOUT_S}s; stop it and retry") from None
                time.sleep(0.2)
        yield


def build(force: bool = False) -> Path:
    """Run ``forge build`` (only changed files recompile; all with ``force``); return the artifacts directory."""
    forge = node_modules_bin("forge")
    if not forge.exists() or shutil.which("node") is None:
        raise ChainError(f"forge ({forge}) or node is missing; install Node.js 18+ and run `npm ci`")
    digest = _digest()  # taken first: a source edited during the build leaves the stamp stale
    cmd = [str(forge), "build", "--skip", "test", *(["--force"] if force else [])]
    with _lock():
        try:
            proc = subprocess.run(cmd, cwd=CONTRACTS_DIR, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ChainError(f"forge build ran past {BUILD_TIMEOUT_S}s; run `bash contracts/test.sh` to see it") from None
        if proc.returncode != 0:
            raise ChainError("contracts do not build (forge build in contracts/):\n" + (proc.stdout + proc.stderr)[-3000:])
        (out_dir() / ".sources").write_text(digest)
    logger.info("%s; artifacts in %s", (proc.stdout.strip().splitlines() or ["built"])[0], out_dir())
    return out_dir()


def load_artifact(name: str, source: str | None = None) -> dict:
    """Forge's artifact of contract ``name`` from ``<source or name>.sol`` (``abi``, ``bytecode.object``).

    Builds first when the sources changed since the last build.
    """
    path = out_dir() / f"{source or name}.sol" / f"{name}.json"
    stamp = out_dir() / ".sources"
    if not path.exists() or not stamp.exists() or stamp.read_text() != _digest():
        build()
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="recompile every file, not only the changed ones")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = build(force=args.force)
    except ChainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"artifacts: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
