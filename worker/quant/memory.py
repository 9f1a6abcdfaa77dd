"""Resident memory of a loaded stage."""

from __future__ import annotations

from torch import nn


def resident_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers ``module`` holds, shared storages counted once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if t.device.type == "meta":
            continue
        key = (str(t.device), t.untyped_storage().data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total
