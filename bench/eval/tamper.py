"""Dishonest hops for the verification study and its tests, built from the real parts.

Each builder returns a :class:`worker.verify.inprocess.LocalHop` that claims a
span and an execution it does not deliver: noise on what it sends, a skipped
block (two sub-span stages around it), int8 weights or bf16 compute where fp32
was paid, or another model of the same shape (the stored weights with seeded
relative noise). :func:`changed_prompt` and :func:`wrong_seed` alter what the
head embeds and what the tail samples with.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from proto.types import NodeId
from worker.planview import GenParams
from worker.shard import load_stage
from worker.verify.inprocess import DTYPES, Alter, LocalHop


def noise(eps: float, seed: int = 0) -> Alter:
    """Add Gaussian noise of ``eps`` x each row's RMS to everything the hop sends (seeded per step)."""
    def alter(y: torch.Tensor, step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        n = torch.randn(y.shape, generator=g, dtype=torch.float32).to(y.device)
        rms = y.float().pow(2).mean(-1, keepdim=True).sqrt()
        return (y.float() + eps * rms * n).to(y.dtype)

    return alter


def noisy_hop(hop: LocalHop, eps: float, seed: int = 0) -> LocalHop:
    return replace(hop, alter=noise(eps, seed))


def skip_block_hop(model_dir: Path | str, node: NodeId, start: int, end: int, skip: int) -> LocalHop:
    """Claims ``[start, end)`` but runs it without block ``skip``: the sub-span stages on either side.
    ``skip`` lies strictly inside, so the head keeps its embedding and the tail its LM head."""
    if not start < skip < end - 1:
        raise ValueError(f"skip a block strictly inside [{start}, {end}), not {skip}")
    return LocalHop(node, start, end, (load_stage(model_dir, start, skip), load_stage(model_dir, skip + 1, end)))


def cheap_hop(model_dir: Path | str, node: NodeId, start: int, end: int, how: str) -> LocalHop:
    """Claims fp32 but runs ``how``: ``"int8-weights"`` (worker.quant int8-mixed) or ``"bf16"`` compute."""
    if how == "int8-weights":
        stage = load_stage(model_dir, start, end, weights="int8-mixed")
    elif how == "bf16":
        stage = load_stage(model_dir, start, end, dtype=DTYPES["bf16"])
    else:
        raise ValueError(f"unknown cheap execution {how!r}")
    return LocalHop(node, start, end, (stage,))


def other_model_hop(model_dir: Path | str, node: NodeId, start: int, end: int, rel: float, seed: int = 0) -> LocalHop:
    """Another model of the same shape: every weight times (1 + ``rel`` x N(0, 1)), seeded."""
    stage = load_stage(model_dir, start, end)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in stage.parameters():
            p.mul_(1 + rel * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return LocalHop(node, start, end, (stage,))


def changed_prompt(prompt: Sequence[int], vocab: int) -> list[int]:
    """The prompt with its middle token replaced by the next id (what a dishonest head embeds)."""
    out = list(prompt)
    i = len(out) // 2
    out[i] = (out[i] + 1) % vocab
    return out


def wrong_seed(params: GenParams) -> GenParams:
    """The tail samples with another seed than the job's."""
    return replace(params, seed=params.seed + 1)
