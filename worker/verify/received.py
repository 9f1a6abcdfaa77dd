"""What a hop received, held against what its sender's receipt says it sent.

A receipt fingerprints what a hop computed, before the codec (:mod:`worker.verify.receipt`).
A verifier that trusts the receipts blames the first hop whose output its own
re-execution does not match; a sender could therefore send one thing, sign a
receipt of another, and let the next hop take the blame ("framing"). So each hop
keeps, for every step, the payload its predecessor sent (signed by it), and when
the predecessor's receipt arrives with the CLOSE it checks every sampled value of
it against what it decoded, within the codec's exact rounding bound
(:func:`worker.codec.error_bound`): an honest sender always passes, whatever its
hardware, and a receipt that describes something else is refused before this hop
signs anything that builds on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from proto.errors import ProtocolError
from proto.types import JobId
from worker import codec
from worker.verify.fingerprint import CHUNK_STEPS, K, chunk_of, chunk_seed, positions
from worker.verify.receipt import HopReceipt


@dataclass(frozen=True)
class Sampled:
    """What the receiver decoded at one chunk's sampled positions, and the codec's bound there."""

    rows: int
    cols: int
    values: np.ndarray  # (k,) float32
    bounds: np.ndarray  # (k,) float32


class ReceivedCheck:
    """The inputs hop ``hop + 1`` received from hop ``hop`` of ``replica`` of ``job_id``, chunk by chunk.

    ``add(step, enc, x)`` takes each step's payload as it arrived and ``x``, what it decoded to
    (already accepted); ``seal(tokens)`` samples every finished chunk at the positions the sender's
    receipt will use (same seed: job, replica, the sender's hop index, chunk, tokens);
    ``check(receipt, tokens)`` raises :class:`ProtocolError` if the receipt's values are
    farther from what arrived than the codec can explain.
    """

    def __init__(self, job_id: JobId, replica: int, hop: int, k: int = K):
        self.job_id, self.replica, self.hop, self.k = job_id, replica, hop, k
        self.chunks: list[Sampled] = []
        self._steps: list[tuple[np.ndarray, np.ndarray]] = []  # the open chunk's steps: (values, bounds), (rows, C)
        self._next = 0

    def add(self, step: int, enc: codec.Encoded, x: torch.Tensor) -> None:
        if step != self._next:
            raise ProtocolError(f"input of hop {self.hop + 1} expected step {self._next}, got {step}")
        if chunk_of(step) != len(self.chunks):
            raise ProtocolError(f"step {step} arrived before chunk {len(self.chunks)} of its inputs was sealed")
        cols = enc.shape[-1]
        # a copy: the stage may run on (and a later step replace) the tensor the hop decoded
        self._steps.append((x.numpy().reshape(-1, cols).copy(), codec.error_bound(enc, x).reshape(-1, cols)))
        self._next += 1

    def seal(self, tokens: Sequence[int]) -> None:
        """Sample the open chunk if all its steps arrived and have their tokens."""
        c = len(self.chunks)
        last = 0 if c == 0 else c * CHUNK_STEPS
        if self._steps and self._next == last + 1 and len(tokens) > last:
            self._close(tokens)

    def check(self, receipt: HopReceipt, tokens: Sequence[int]) -> None:
        """Every sampled value of ``receipt`` (the sender's) within the codec's bound of what arrived."""
        if self._steps:
            self._close(tokens)
        who = f"hop {self.hop} ({receipt.node})"
        if (int(receipt.job_id), receipt.replica, receipt.hop) != (int(self.job_id), self.replica, self.hop):
            raise ProtocolError(f"the receipt handed on as {who}'s names job {receipt.job_id} replica "
                                f"{receipt.replica} hop {receipt.hop}")
        if len(receipt.chunks) != len(self.chunks):
            raise ProtocolError(f"{who}'s receipt has {len(receipt.chunks)} chunks; it sent {len(self.chunks)}")
        for c, (fp, got) in enumerate(zip(receipt.chunks, self.chunks)):
            if (fp.rows, fp.cols, fp.k) != (got.rows, got.cols, self.k):
                raise ProtocolError(f"{who}'s receipt chunk {c} covers {fp.rows} x {fp.cols} values ({fp.k} "
                                    f"sampled); it sent {got.rows} x {got.cols}")
            claimed = fp.decoded()
            off = np.abs(claimed - got.values) - got.bounds
            if (off > 0).any():
                j = int(np.argmax(off))
                raise ProtocolError(f"{who} sent activations its receipt does not describe: chunk {c}, "
                                    f"{int((off > 0).sum())} of {self.k} sampled values beyond the codec's "
                                    f"rounding (worst: claimed {claimed[j]:.6g}, sent {got.values[j]:.6g}, "
                                    f"bound {got.bounds[j]:.3g}); refusing to pass its receipt on")

    def _close(self, tokens: Sequence[int]) -> None:
        c = len(self.chunks)
        lo = 0 if c == 0 else 1 + (c - 1) * CHUNK_STEPS
        values = np.concatenate([v for v, _ in self._steps])
        bounds = np.concatenate([b for _, b in self._steps])
        seed = chunk_seed(self.job_id, self.replica, self.hop, c, tokens[lo : self._next])
        r, col = positions(seed, *values.shape, self.k)
        self.chunks.append(Sampled(*values.shape, values[r, col].copy(), bounds[r, col].copy()))
        self._steps = []
