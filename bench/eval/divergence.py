"""Where two greedy runs part, and how close the reference was to a tie there (pure).

A *run* is the greedy token ids of one replica for one prompt together with
the top-two logit margin (largest minus second-largest logit) at every step.
Two honest replicas that compute slightly different logits pick different
tokens only where the top two logits are nearly tied; after the first
divergent step the continuations fork, so only the first one is meaningful.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class Run:
    """One replica's greedy output for one prompt."""

    ids: tuple[int, ...]  # generated token ids, one per step
    margins: tuple[float, ...]  # top-1 minus top-2 logit at each step (same length)

    def __post_init__(self):
        if len(self.ids) != len(self.margins):
            raise ValueError(f"{len(self.ids)} ids but {len(self.margins)} margins")


def top2_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 of the last dimension, in float32: ``(..., V) -> (...)``."""
    if logits.shape[-1] < 2:
        raise ValueError("need at least two classes to take a top-two margin")
    top = logits.float().topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first step where ``a`` and ``b`` differ; None if equal (lengths must match)."""
    if len(a) != len(b):
        raise ValueError(f"runs of different lengths ({len(a)} vs {len(b)}) cannot be compared")
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def _quantiles(xs: list[float], qs=(0.5, 0.9, 1.0)) -> dict[str, float | None]:
    if not xs:
        return {f"p{int(q * 100)}": None for q in qs}
    s = sorted(xs)
    return {f"p{int(q * 100)}": round(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))], 4) for q in qs}


def compare(ref: Sequence[Run], other: Sequence[Run]) -> dict:
    """Summary of ``other`` against ``ref`` over the same prompts, in order.

    ``differ_frac``: share of prompts whose token ids differ anywhere (what a
    hash of the output would flag). ``first_steps``: first divergent step of
    each differing prompt. ``ref_margin_at_divergence``: the reference's top-2
    margin at that step. ``ref_margin_all_steps``: quantiles of the reference's
    margin over every step of every prompt, for scale. ``steps_below_max_divergence_margin``:
    share of all reference steps whose margin is at most the largest margin at
    which a divergence happened (how rare such near-ties are).
    ``margin_drift_max``: largest difference of the two replicas' margins at
    steps both computed from the same context (0.0: bitwise-equal top logits).
    """
    if len(ref) != len(other):
        raise ValueError(f"{len(ref)} reference runs but {len(other)} runs to compare")
    firsts, at_ref, at_other, drift = [], [], [], 0.0
    for r, o in zip(ref, other):
        k = first_divergence(r.ids, o.ids)
        shared = len(r.ids) if k is None else k  # steps both computed from the same context
        drift = max([drift, *(abs(a - b) for a, b in zip(r.margins[:shared], o.margins[:shared]))])
        if k is not None:
            firsts.append(k)
            at_ref.append(r.margins[k])
            at_other.append(o.margins[k])
    all_margins = [m for r in ref for m in r.margins]
    below = (sum(m <= max(at_ref) for m in all_margins) / len(all_margins)) if at_ref and all_margins else 0.0
    return {
        "prompts": len(ref),
        "steps": len(ref[0].ids) if ref else 0,
        "differ": len(firsts),
        "differ_frac": round(len(firsts) / len(ref), 4) if ref else 0.0,
        "first_steps": firsts,
        "first_step_median": statistics.median(firsts) if firsts else None,
        "ref_margin_at_divergence": [round(m, 4) for m in at_ref],
        "other_margin_at_divergence": [round(m, 4) for m in at_other],
        "ref_margin_at_divergence_q": _quantiles(at_ref),
        "ref_margin_all_steps_q": _quantiles(all_margins, (0.01, 0.05, 0.5)),
        "steps_below_max_divergence_margin": round(below, 4),
        "margin_drift_max": drift,
    }


def margin_threshold_rate(ref: Sequence[Run], threshold: float) -> float:
    """Share of prompts with at least one step whose reference margin is at most ``threshold``.

    An upper bound on how many jobs a tie-aware verifier would have to treat
    as ambiguous if it tolerated divergences at margins up to ``threshold``.
    """
    if not ref:
        return 0.0
    return sum(any(m <= threshold for m in r.margins) for r in ref) / len(ref)
