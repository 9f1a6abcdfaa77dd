"""Regenerate (or check) the Python code generated from ``proto/**/*.proto``.

``python -m proto.generate`` writes ``*_pb2.py``, ``*_pb2.pyi`` and
``*_pb2_grpc.py`` beside each ``.proto``. ``python -m proto.generate --check``
generates into a temporary folder and exits 1 if the checked-in files differ.
Protos are compiled relative to the repository root, so generated imports read
``from proto.tessera.v1 import ...`` and never shadow the ``tessera`` package.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import shutil
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def protos() -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / "proto").rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Compile every proto into ``out`` (mirroring the repo layout); return written files."""
    # lazy: grpcio-tools is a dev extra; nodes and requesters never generate code
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p) for p in protos()]
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {files}")
    return [out / p.with_suffix("").as_posix().__add__(s) for p in protos() for s in SUFFIXES]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if generated code is stale")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        written = generate(Path(tmp))
        stale = []
        for f in written:
            rel = f.relative_to(tmp)
            dest = ROOT / rel
            if args.check:
                if not dest.exists() or not filecmp.cmp(f, dest, shallow=False):
                    stale.append(str(rel))
            else:
                shutil.copyfile(f, dest)
                print(f"wrote {rel}")
    if stale:
        print("stale generated code: " + ", ".join(stale) + "; run `python -m proto.generate`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
