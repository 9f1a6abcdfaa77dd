"""Reproducible next-token choice: the same ids on any hardware, for any seed.

Greedy (temperature 0) takes the argmax, the lowest index on ties. Temperature
sampling draws the uniform for step ``t`` from the chain-visible seed,
``u = uint256(keccak256(abi.encode(uint256 seed, uint256 t))) / 2**256``
(proto.types), and inverts the CDF of the float64 softmax of
``logits / (temperature_milli / 1000)``: the first index whose running sum
exceeds ``u``. No framework RNG is ever used.
"""

from __future__ import annotations

import numpy as np
import torch
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from proto.errors import TesseraError


def uniform(seed: int, step: int) -> float:
    """The float64 uniform in [0, 1) for ``step`` of a job seeded with ``seed``."""
    if not (0 <= seed < 2**256 and 0 <= step < 2**256):
        raise TesseraError(f"seed and step must be uint256, got seed={seed} step={step}")
    h = keccak(abi_encode(["uint256", "uint256"], [seed, step]))
    return int.from_bytes(h, "big") / 2**256


def sample(logits: torch.Tensor, temperature_milli: int, seed: int, step: int) -> int:
    """Token id for one position from its logits row ``(V,)``."""
    if temperature_milli < 0:
        raise TesseraError(f"temperature_milli must be >= 0, got {temperature_milli}")
    # greedy needs no float64 copy: widening is exact, so the argmax (and its tie-break) is the same
    dtype = torch.float32 if temperature_milli == 0 else torch.float64
    row = logits.detach().to("cpu", dtype).flatten().numpy()
    if row.size == 0 or not np.isfinite(row).all():
        raise TesseraError("logits are empty or hold NaN/Inf; the model produced invalid output")
    if temperature_milli == 0:
        return int(np.argmax(row))
    z = row / (temperature_milli / 1000.0)
    z = z - z.max()
    p = np.exp(z)
    cdf = np.cumsum(p / p.sum())
    i = int(np.searchsorted(cdf, uniform(seed, step), side="right"))
    return min(i, row.size - 1)  # u above cdf[-1] by rounding: last token


def argmax_classes(logits: torch.Tensor) -> list[int]:
    """Class ids of a classifier's ``(B, K)`` logits (vision jobs)."""
    return [int(i) for i in logits.detach().to("cpu", torch.float64).argmax(dim=-1).flatten()]
