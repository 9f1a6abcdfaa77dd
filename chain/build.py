"""Compile the contracts with the pinned solcjs and write artifacts under contracts/out/.

``python -m chain.build [--force]`` runs a standard-JSON compile through
``contracts/solc.js`` (node + npm ``solc``) and writes one
``contracts/out/<Name>.json`` per contract with ``abi`` and ``bytecode``. A
digest of the sources and settings is kept in ``contracts/out/.digest``; when it
matches, nothing is compiled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from proto.errors import ChainError
from proto.paths import REPO_ROOT

logger = logging.getLogger(__name__)

CONTRACTS_DIR = REPO_ROOT / "contracts"
SRC_DIR = CONTRACTS_DIR / "src"
OUT_DIR = CONTRACTS_DIR / "out"
CONTRACT_NAMES = ("ModelRegistry", "NodeRegistry", "JobMarket")
SETTINGS = {
    "optimizer": {"enabled": True, "runs": 10_000},
    "evmVersion": "cancun",
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


def _sources() -> dict[str, str]:
    return {f"src/{p.name}": p.read_text() for p in sorted(SRC_DIR.glob("*.sol"))}


def _digest(sources: dict[str, str]) -> str:
    h = hashlib.sha256(json.dumps([sources, SETTINGS], sort_keys=True).encode())
    h.update((CONTRACTS_DIR / "solc.js").read_bytes())
    return h.hexdigest()


def compile_sources(sources: dict[str, str]) -> dict:
    """Run solcjs standard-JSON on ``sources``; return the parsed output or raise ChainError."""
    if shutil.which("node") is None:
        raise ChainError("node is not installed; install Node.js 18+ and run `npm ci`")
    std_in = {"language": "Solidity", "sources": {k: {"content": v} for k, v in sources.items()}, "settings": SETTINGS}
    proc = subprocess.run(
        ["node", str(CONTRACTS_DIR / "solc.js"), str(CONTRACTS_DIR)],
        input=json.dumps(std_in), capture_output=True, text=True, cwd=CONTRACTS_DIR,
    )
    if proc.returncode != 0:
        raise ChainError(f"solcjs failed ({proc.stderr.strip()[-500:]}); run `npm ci` to install the pinned solc")
    out = json.loads(proc.stdout)
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ChainError("contracts do not compile:\n" + "\n".join(e["formattedMessage"] for e in errors))
    return out


def build(force: bool = False) -> Path:
    """Compile if sources changed; return the artifacts directory."""
    sources = _sources()
    digest = _digest(sources)
    stamp = OUT_DIR / ".digest"
    if not force and stamp.exists() and stamp.read_text() == digest:
        logger.info("contracts unchanged; artifacts in %s", OUT_DIR)
        return OUT_DIR
    out = compile_sources(sources)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for file_contracts in out["contracts"].values():
        for name, c in file_contracts.items():
            art = {
                "contractName": name,
                "abi": c["abi"],
                "bytecode": "0x" + c["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + c["evm"]["deployedBytecode"]["object"],
            }
            (OUT_DIR / f"{name}.json").write_text(json.dumps(art, indent=1))
    stamp.write_text(digest)
    logger.info("compiled %d source files into %s", len(sources), OUT_DIR)
    return OUT_DIR


def load_artifact(name: str) -> dict:
    """The ``{abi, bytecode}`` artifact of a contract, compiling first if needed."""
    path = OUT_DIR / f"{name}.json"
    if not path.exists():
        build()
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="compile even if sources are unchanged")
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
