"""The model store: stored model directories, their manifests and verification.

A stored model lives in ``proto.paths.models_dir()/<name>/``: a plain Hugging
Face style directory (``config.json``, safetensors weights, tokenizer files)
plus ``manifest.json`` (:class:`Manifest`) with the per-stage weight hashes and
the weights root that the ModelRegistry commits to.

Public API::

    resolve(name_or_path) -> Path
    load_manifest(name_or_path) -> Manifest
    list_models() -> list[Manifest]
    verify_span(manifest, start, end, onchain_root) -> dict[str, bytes]
    verify_metadata(manifest, onchain_tokenizer, onchain_config)
    fetch(name, force=False) -> Manifest          # worker.store.install
    import_dir(src, name=None, force=False) -> Manifest
"""

from __future__ import annotations

import logging
from pathlib import Path

from proto import paths
from proto.errors import ModelError, WeightHashMismatch
from worker.quant.outliers import OUTLIERS_FILE
from worker.store import install
from worker.store.hashing import file_hash, stage_hashes, weights_root
from worker.store.manifest import (
    CONFIG_FILES,
    MANIFEST,
    TOKENIZER_FILES,
    Manifest,
    build_manifest,
    metadata_hashes,
    read_manifest,
    write_manifest,
)

logger = logging.getLogger(__name__)

__all__ = ["Manifest", "resolve", "load_manifest", "list_models", "verify_span", "verify_metadata", "fetch", "import_dir",
           "build_manifest", "write_manifest", "stage_hashes", "weights_root"]


def resolve(name: str | Path) -> Path:
    """Directory of a stored model, given its name or a path to a model directory."""
    p = Path(name).expanduser()
    if p.is_dir() and (p / MANIFEST).is_file():
        return p
    stored = paths.models_dir() / str(name)
    if (stored / MANIFEST).is_file():
        return stored
    raise ModelError(f"model {name!r} is not in the store ({paths.models_dir()}); run "
                     f"`tessera model fetch {name}` or `tessera model import DIR --name {name}`")


def load_manifest(name_or_path: str | Path) -> Manifest:
    """The manifest of a stored model (by name or directory)."""
    return read_manifest(resolve(name_or_path))


def list_models() -> list[Manifest]:
    """Manifests of every model in the store, sorted by name."""
    out = []
    for d in sorted(paths.models_dir().iterdir()):
        if (d / MANIFEST).is_file():
            try:
                out.append(read_manifest(d))
            except ModelError as exc:
                logger.warning("skipping %s: %s", d, exc)
    return out


def verify_span(manifest: Manifest, start: int, end: int, onchain_root: bytes | None) -> dict[str, bytes]:
    """Check that the weights a node serving ``[start, end)`` will load are the committed ones.

    Recomputes, from the weights on disk, the hashes of the stages the span runs
    (input if ``start == 0``, blocks ``start..end-1``, output if ``end ==
    num_blocks``), and checks them against the manifest, the manifest against
    its own root, and that root against ``onchain_root`` (the ModelRegistry's
    commitment; ``None`` skips only that last check, for offline use).
    Returns the verified stage hashes; raises :class:`WeightHashMismatch`.
    """
    if not 0 <= start < end <= manifest.num_blocks:
        raise ModelError(f"span [{start}, {end}) is not inside [0, {manifest.num_blocks}) of {manifest.name}")
    if manifest.directory is None:
        raise ModelError("manifest has no directory; load it with worker.store.load_manifest")
    root = weights_root(manifest.stage_hashes)
    if root != manifest.weights_root:
        raise WeightHashMismatch(f"manifest of {manifest.name} is inconsistent (its stage hashes do not give its "
                                 f"weights root); re-fetch or re-import the model")
    if onchain_root is not None and bytes(onchain_root) != root:
        raise WeightHashMismatch(
            f"weights of {manifest.name} in {manifest.directory} (root 0x{root.hex()}) are not the ones registered "
            f"on chain (0x{bytes(onchain_root).hex()}); fetch the registered version of the model")
    got = stage_hashes(manifest.directory, start=start, end=end)
    bad = [s for s, h in got.items() if h != manifest.stage_hash(s)]
    if bad:
        raise WeightHashMismatch(
            f"weights on disk for {', '.join(bad)} of {manifest.name} do not match the manifest; the files in "
            f"{manifest.directory} were modified or corrupted: delete the directory and fetch/import it again")
    if file_hash(manifest.directory / OUTLIERS_FILE) != manifest.int8_outliers_hash:
        raise WeightHashMismatch(f"{OUTLIERS_FILE} of {manifest.name} does not match the manifest; "
                                 "fetch or import the model again")
    logger.info("verified %s blocks [%d, %d) against root 0x%s", manifest.name, start, end, root.hex()[:16])
    return got


def verify_metadata(manifest: Manifest, onchain_tokenizer: bytes, onchain_config: bytes) -> None:
    """Check the tokenizer and config files on disk against the ModelRegistry's hashes.

    The head tokenizes prompts with those files and every stage reads its architecture (sliding
    window, rope, norms) and the end-of-sequence ids from them, so a swapped file changes outputs as
    surely as swapped weights. Raises :class:`WeightHashMismatch` naming the file set that differs.
    """
    if manifest.directory is None:
        raise ModelError("manifest has no directory; load it with worker.store.load_manifest")
    tok, cfg = metadata_hashes(manifest.directory)
    for what, names, local, onchain in (("tokenizer", TOKENIZER_FILES, tok, onchain_tokenizer),
                                        ("config", CONFIG_FILES, cfg, onchain_config)):
        if local != bytes(onchain):
            present = [n for n in names if (manifest.directory / n).is_file()] or ["none of them"]
            raise WeightHashMismatch(
                f"the {what} files of {manifest.name} in {manifest.directory} ({', '.join(present)}: hash "
                f"0x{local.hex()[:16]}..) are not the ones registered on chain (0x{bytes(onchain).hex()[:16]}..); "
                "fetch the registered version of the model, or register this one under its own name")


def fetch(name: str, force: bool = False, progress=None) -> Manifest:
    return install.fetch(name, force=force, progress=progress)


def import_dir(src: str | Path, name: str | None = None, force: bool = False) -> Manifest:
    return install.import_dir(src, name=name, force=force)
