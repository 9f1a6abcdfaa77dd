"""Chunk fingerprints: a few hundred bytes that pin down what a hop computed over up to 32 steps.

A hop's output over one chunk of steps is a ``(R, C)`` float tensor: ``R`` rows
(one per position it computed: the whole prompt at step 0, one per decode
step after), ``C`` features (the hidden size, or the vocabulary on a tail,
whose output is logits). The fingerprint keeps :data:`K` of its values, as
float32, at positions drawn from a seed that mixes the chunk's own output
tokens (:func:`chunk_seed`), stratified over rows: 267 bytes per chunk. The
seed is unknown to the hop while it sends the chunk's activations, so it
cannot tamper only where the fingerprint will not look.

Why not TOPLOC's top-k (the ``toploc`` package, arXiv 2501.16007)? Its top-k
over a chunk lands on a few massive features (SmolLM2's residual stream holds
dims 507, 247 and 308 at 10-25x the row RMS in every token, and a 2e4
attention-sink row in the prefill), so it sees a sliver of the state; its
bf16 values are coarser than the deviations that matter in an fp32 job (a
perturbation of 1e-4 of the row RMS at one hop grows 10-50x by the tail); and
the package ships a cp311 wheel only, while workers run on 3.12 too. Seeded
positions read the whole state evenly and need no index bytes.

:func:`compare` measures each sampled value's error in units of the RMS of
the verifier's own row; :class:`ChunkCheck` keeps its median and 90th
percentile for the tolerance checks.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from eth_hash.auto import keccak

from proto.errors import ProtocolError
from proto.types import encode_output

K = 64  # sampled values per chunk
CHUNK_STEPS = 32  # decode steps per chunk after the prefill chunk (step 0)
VERSION = 1
SEED_DOMAIN = keccak(b"tessera.v1.Fingerprint")
MAX_ROWS = 1 << 20  # positions in one chunk (a prompt longer than this is refused)
MAX_COLS = 1 << 22  # features or vocabulary
_HEAD = struct.Struct("<BIIH")  # version, rows, cols, k


def chunk_of(step: int) -> int:
    """Chunk index of ``step``: 0 for the prefill, then 32 decode steps each."""
    return 0 if step == 0 else 1 + (step - 1) // CHUNK_STEPS


def chunk_steps(chunk: int, steps: int) -> range:
    """The steps of ``chunk`` in a run of ``steps`` steps (0 .. steps-1)."""
    if chunk == 0:
        return range(0, min(1, steps))
    lo = 1 + (chunk - 1) * CHUNK_STEPS
    return range(lo, min(lo + CHUNK_STEPS, steps))


def num_chunks(steps: int) -> int:
    """Chunks in a run of ``steps`` steps."""
    return 0 if steps <= 0 else 1 + chunk_of(steps - 1)


def chunk_seed(job: int, replica: int, hop: int, chunk: int, tokens: Sequence[int]) -> bytes:
    """32-byte seed of the sample positions: the job, hop and chunk, and the tokens chosen in it."""
    words = b"".join(int(v).to_bytes(32, "big") for v in (job, replica, hop, chunk))
    return keccak(SEED_DOMAIN + words + encode_output(tokens))


def positions(seed: bytes, rows: int, cols: int, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the ``k`` sampled values: sample ``j`` takes a row in the ``j``-th of ``k``
    equal row strata and any column, both from keccak(seed, counter) words (pure, portable)."""
    if not (1 <= rows <= MAX_ROWS and 1 <= cols <= MAX_COLS):
        raise ProtocolError(f"chunk of {rows} x {cols} values is outside 1..{MAX_ROWS} x 1..{MAX_COLS}")
    need = 2 * k
    stream = b"".join(keccak(seed + i.to_bytes(4, "big")) for i in range(-(-need // 8)))
    words = np.frombuffer(stream, ">u4")[:need].astype(np.int64)
    j = np.arange(k, dtype=np.int64)
    lo = j * rows // k
    width = np.maximum((j + 1) * rows // k - lo, 1)
    return lo + words[:k] % width, words[k:] % cols


@dataclass(frozen=True)
class Fingerprint:
    """The sampled values of one chunk, float32 little-endian."""

    rows: int  # positions the chunk covered
    cols: int  # features per position
    values: bytes  # k float32 values

    def __post_init__(self):
        if len(self.values) % 4 or not 0 < len(self.values) // 4 <= 0xFFFF:
            raise ProtocolError(f"fingerprint values must be 1..65535 float32 numbers, got {len(self.values)} bytes")

    @property
    def k(self) -> int:
        return len(self.values) // 4

    def decoded(self) -> np.ndarray:
        """The sampled values as float64."""
        return np.frombuffer(self.values, "<f4").astype(np.float64)

    def to_bytes(self) -> bytes:
        return _HEAD.pack(VERSION, self.rows, self.cols, self.k) + self.values

    @classmethod
    def from_bytes(cls, data: bytes) -> "Fingerprint":
        if len(data) < _HEAD.size:
            raise ProtocolError(f"fingerprint of {len(data)} bytes is shorter than its {_HEAD.size}-byte header")
        version, rows, cols, k = _HEAD.unpack_from(data)
        if version != VERSION:
            raise ProtocolError(f"fingerprint version {version} is not {VERSION}; upgrade the worker")
        if len(data) != _HEAD.size + 4 * k:
            raise ProtocolError(f"fingerprint says {k} values but holds {len(data) - _HEAD.size} bytes of them")
        positions(b"", rows, cols, 1)  # bounds check on rows and cols
        return cls(rows, cols, data[_HEAD.size:])


def fingerprint(y: np.ndarray, seed: bytes, k: int = K) -> Fingerprint:
    """The fingerprint of one chunk's output ``y`` (``(R, C)``, any float dtype)."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 2:
        raise ProtocolError(f"a chunk's output must be (rows, cols), got shape {y.shape}")
    r, c = positions(seed, *y.shape, k)
    v = y[r, c]
    if not np.isfinite(v).all():
        raise ProtocolError("the chunk's output holds NaN or Inf; nothing honest to fingerprint")
    return Fingerprint(y.shape[0], y.shape[1], v.astype("<f4").tobytes())


@dataclass(frozen=True)
class ChunkCheck:
    """How far a fingerprint is from the verifier's own values, in units of row RMS."""

    median: float  # median over the samples of |claimed - verifier's value| / verifier's row RMS
    p90: float  # 90th percentile of the same
    shape_ok: bool  # the fingerprint covers the rows and columns the verifier expects

    def within(self, median: float, p90: float) -> bool:
        return self.shape_ok and self.median <= median and self.p90 <= p90


def compare(fp: Fingerprint, y: np.ndarray, seed: bytes) -> ChunkCheck:
    """Check ``fp`` against the verifier's own output ``y`` of the same chunk."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 2 or (fp.rows, fp.cols) != y.shape:
        return ChunkCheck(math.inf, math.inf, False)
    r, c = positions(seed, fp.rows, fp.cols, fp.k)
    mine = y[r, c].astype(np.float64)
    theirs = fp.decoded()
    if not np.isfinite(theirs).all():
        return ChunkCheck(math.inf, math.inf, True)
    rms = np.sqrt(np.mean(np.square(y.astype(np.float64)), axis=1))[r]
    err = np.abs(theirs - mine) / np.maximum(rms, 1e-30)
    return ChunkCheck(float(np.median(err)), float(np.quantile(err, 0.9)), True)
