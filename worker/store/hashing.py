"""Per-stage weight hashes and the weights root committed on chain.

``h_stage = keccak256`` over the stage's tensors sorted by logical name, each
contributing::

    u32be(len(name)) || name_utf8 || u32be(len(dtype)) || dtype_ascii ||
    u32be(ndim) || u64be(dim)* || u64be(nbytes) || raw little-endian bytes

where ``dtype`` is the torch dtype name (``float32``, ``bfloat16``...). The
bytes are those stored on disk, so hashes do not depend on the device or dtype
a worker later runs in. The weights root is ``keccak256(h_input || h_block_0 ||
... || h_block_{N-1} || h_output)`` (see :mod:`proto.types`).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable

import torch
from Crypto.Hash import keccak as _keccak
from eth_hash.auto import keccak

from worker.shard import stage_layout
from worker.shard.layout import Entry, StageLayout
from worker.shard.weights import iter_tensors


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """Raw bytes of a CPU tensor in C order (little-endian on every supported host)."""
    t = t.detach().to("cpu").contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def hash_named_tensors(items: Iterable[tuple[str, torch.Tensor]]) -> bytes:
    """The stage hash of ``(logical name, tensor)`` pairs (any order)."""
    h = _keccak.new(digest_bits=256)
    for name, t in sorted(items, key=lambda x: x[0]):
        nb = name.encode()
        dt = str(t.dtype).removeprefix("torch.").encode()
        h.update(struct.pack(">I", len(nb)) + nb + struct.pack(">I", len(dt)) + dt)
        h.update(struct.pack(">I", t.dim()) + b"".join(struct.pack(">Q", d) for d in t.shape))
        buf = tensor_bytes(t)
        h.update(struct.pack(">Q", buf.nbytes))
        if buf.nbytes:
            h.update(buf)
    return h.digest()


def hash_entries(model_dir: Path, entries: Iterable[Entry]) -> bytes:
    """Hash one stage, reading its tensors from disk one at a time (in name order)."""
    order = sorted(entries, key=lambda e: e[0])
    tensors = iter_tensors(model_dir, [key for _, key in order])
    return hash_named_tensors((name, t) for (name, _), (_, t) in zip(order, tensors))


def stage_hashes(model_dir: Path, layout: StageLayout | None = None,
                 start: int = 0, end: int | None = None) -> dict[str, bytes]:
    """Hashes of the stages served by ``[start, end)`` (default: the whole model).

    Keys are ``"input"``, ``"block.{i}"`` and ``"output"``, as in
    :meth:`StageLayout.span_entries`.
    """
    layout = layout or stage_layout(model_dir)
    end = layout.num_blocks if end is None else end
    return {stage: hash_entries(model_dir, ents) for stage, ents in layout.span_entries(start, end).items()}


def weights_root(stage_hash_list: Iterable[bytes]) -> bytes:
    """``keccak256`` of the concatenated stage hashes (input, blocks..., output)."""
    hs = list(stage_hash_list)
    if any(len(h) != 32 for h in hs):
        raise ValueError("every stage hash must be 32 bytes")
    return keccak(b"".join(hs))


def file_hash(path: Path) -> bytes:
    """``keccak256`` of a file's bytes; 32 zero bytes when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return bytes(32)
    return keccak(path.read_bytes())


def files_hash(directory: Path, names: Iterable[str]) -> bytes:
    """``keccak256`` over the named files present in ``directory`` (each as its name, a zero byte and
    the keccak of its bytes, in the order given); 32 zero bytes when none is present."""
    directory = Path(directory)
    parts = [name.encode() + b"\0" + keccak((directory / name).read_bytes())
             for name in names if (directory / name).is_file()]
    return keccak(b"".join(parts)) if parts else bytes(32)
