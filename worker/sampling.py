"""Reproducible next-token choice: the same ids on any hardware, for any seed.

The rule, applied by the tail and by anyone who checks it (the verifier applies
it to its own logits):

1. ``z = logits`` in float64.
2. Repetition penalty ``r = repetition_penalty_milli / 1000`` (1 = off): every
   distinct id in ``history`` (the ids this job generated so far; the tail
   never sees the prompt's ids) gets ``z / r`` if ``z > 0`` else ``z * r``.
3. Temperature 0 is greedy: the argmax of ``z``, the lowest id on ties; the
   filters below do not apply.
4. ``z / (temperature_milli / 1000)``; top-k (0 = off) keeps the ``k`` largest,
   ties broken by the lower id.
5. Softmax in float64 over the kept ids; top-p (``top_p_milli / 1000``, 1000 =
   off) keeps the fewest most probable ids (ties: lower id first) whose
   probabilities sum to at least ``p``; the rest get probability 0.
6. The uniform for step ``t`` is ``uint256(keccak256(abi.encode(uint256 seed,
   uint256 t))) / 2**256`` (proto.types); the token is the first id, in id
   order, whose running sum of the renormalised probabilities exceeds it.

No framework RNG is ever used. With every filter off, steps 2, 4 and 5 change
nothing, so the result is the plain inverse CDF of ``softmax(z / T)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from proto.errors import TesseraError

PENALTY_OFF = 1000  # repetition_penalty_milli that changes nothing
TOP_P_OFF = 1000  # top_p_milli that keeps every id


def uniform(seed: int, step: int) -> float:
    """The float64 uniform in [0, 1) for ``step`` of a job seeded with ``seed``."""
    if not (0 <= seed < 2**256 and 0 <= step < 2**256):
        raise TesseraError(f"seed and step must be uint256, got seed={seed} step={step}")
    h = keccak(abi_encode(["uint256", "uint256"], [seed, step]))
    return int.from_bytes(h, "big") / 2**256


def check_params(temperature_milli: int, top_k: int = 0, top_p_milli: int = TOP_P_OFF,
                 repetition_penalty_milli: int = PENALTY_OFF) -> None:
    """Raise TesseraError for parameters the rule does not define."""
    if temperature_milli < 0:
        raise TesseraError(f"temperature_milli must be >= 0, got {temperature_milli}")
    if top_k < 0:
        raise TesseraError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p_milli <= TOP_P_OFF:
        raise TesseraError(f"top_p_milli must be in 1..1000 (1000 = off), got {top_p_milli}")
    if repetition_penalty_milli <= 0:
        raise TesseraError(f"repetition_penalty_milli must be > 0 (1000 = off), got {repetition_penalty_milli}")


def penalized(logits: torch.Tensor, repetition_penalty_milli: int = PENALTY_OFF,
              history: Sequence[int] = ()) -> np.ndarray:
    """Steps 1-2: the logits row as float64 with the repetition penalty applied to ``history``."""
    z = logits.detach().to("cpu", torch.float64).flatten().numpy().copy()
    if z.size == 0 or not np.isfinite(z).all():
        raise TesseraError("logits are empty or hold NaN/Inf; the model produced invalid output")
    if repetition_penalty_milli != PENALTY_OFF and len(history):
        ids = np.unique(np.asarray(history, dtype=np.int64))
        if ids.min() < 0 or ids.max() >= z.size:
            raise TesseraError(f"history holds ids outside the vocabulary of {z.size}")
        r = repetition_penalty_milli / 1000.0
        z[ids] = np.where(z[ids] > 0, z[ids] / r, z[ids] * r)
    return z


def distribution(logits: torch.Tensor, temperature_milli: int, *, top_k: int = 0, top_p_milli: int = TOP_P_OFF,
                 repetition_penalty_milli: int = PENALTY_OFF, history: Sequence[int] = ()) -> np.ndarray:
    """Steps 1-5 for a sampling temperature (> 0): float64 probabilities over the vocabulary, 0 for
    every filtered id, summing to 1 up to rounding. Sampling draws from ``np.cumsum`` of it."""
    check_params(temperature_milli, top_k, top_p_milli, repetition_penalty_milli)
    if temperature_milli == 0:
        raise TesseraError("temperature 0 is greedy and has no distribution; use sample()")
    z = penalized(logits, repetition_penalty_milli, history) / (temperature_milli / 1000.0)
    ids = np.arange(z.size)
    keep = np.ones(z.size, dtype=bool)
    if 0 < top_k < z.size:
        order = np.lexsort((ids, -z))  # largest first, lower id first on ties
        keep[:] = False
        keep[order[:top_k]] = True
    z = z - z[keep].max()
    p = np.where(keep, np.exp(np.where(keep, z, 0.0)), 0.0)
    p = p / p.sum()
    if top_p_milli != TOP_P_OFF:
        order = np.lexsort((ids, -p))
        mass = np.cumsum(p[order])
        n = int(np.searchsorted(mass, top_p_milli / 1000.0, side="left")) + 1  # fewest ids reaching p
        kept = np.zeros(z.size, dtype=bool)
        kept[order[:min(n, int(keep.sum()))]] = True
        p = np.where(kept, p, 0.0)
        p = p / p.sum()
    return p


def choose(probs: np.ndarray, u: float) -> int:
    """Step 6: the first id whose running sum of ``probs`` exceeds ``u`` (the last id with mass if
    rounding leaves ``u`` above the total)."""
    cdf = np.cumsum(probs)
    i = int(np.searchsorted(cdf, u, side="right"))
    if i < probs.size:
        return i
    return int(np.flatnonzero(probs)[-1])


def sample(logits: torch.Tensor, temperature_milli: int, seed: int, step: int, *, top_k: int = 0,
           top_p_milli: int = TOP_P_OFF, repetition_penalty_milli: int = PENALTY_OFF,
           history: Sequence[int] = ()) -> int:
    """Token id for one position from its logits row ``(V,)`` (any shape that flattens to it), by
    the rule of this module. ``history``: the ids generated so far, for the repetition penalty."""
    check_params(temperature_milli, top_k, top_p_milli, repetition_penalty_milli)
    if temperature_milli == 0:
        if repetition_penalty_milli == PENALTY_OFF:  # widening is exact: the same argmax as float64
            row = logits.detach().to("cpu", torch.float32).flatten().numpy()
            if row.size == 0 or not np.isfinite(row).all():
                raise TesseraError("logits are empty or hold NaN/Inf; the model produced invalid output")
            return int(np.argmax(row))
        return int(np.argmax(penalized(logits, repetition_penalty_milli, history)))
    probs = distribution(logits, temperature_milli, top_k=top_k, top_p_milli=top_p_milli,
                         repetition_penalty_milli=repetition_penalty_milli, history=history)
    return choose(probs, uniform(seed, step))


def argmax_classes(logits: torch.Tensor) -> list[int]:
    """Class ids of a classifier's ``(B, K)`` logits (vision jobs)."""
    return [int(i) for i in logits.detach().to("cpu", torch.float64).argmax(dim=-1).flatten()]
