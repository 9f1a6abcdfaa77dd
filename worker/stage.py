"""The contract between sharding (``worker.shard``) and execution (sessions, gRPC).

A model is a list of ``num_blocks`` blocks between an input stage (embedding or
patchify) and an output stage (final norm + head). A :class:`Stage` owns blocks
``[start, end)``, which keep their absolute indices (a block's behaviour may
depend on its index: attention scaling, sliding-window patterns, its cache
slot); if ``start == 0`` it also runs the input stage, if ``end == num_blocks``
it also runs the output stage.

Tensors that flow through ``Stage.forward``:

* head stage input: token ids ``(B, T)`` int64 for language models, the raw
  input tensor (e.g. images ``(B, 1, 8, 8)`` float32) for others;
* between stages: hidden states, e.g. ``(B, T, C)``, in the stage's dtype;
  for a model whose skip connections cross a cut (an fx model), a tuple
  ``(primary, *extras)`` of every tensor that crosses it (:data:`Activation`);
* tail stage output: logits, ``(B, T, V)`` for language models (``(B, 1, V)``
  with ``last=True``), ``(B, K)`` for classifiers.

Decoders keep a per-session cache returned by ``new_cache()`` and passed to
every ``forward`` call of that session; the cache knows how many positions it
holds, so positions need not be passed. Stateless models return ``None`` from
``new_cache`` and ignore the argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Union

import torch

Activation = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # what crosses a cut: one tensor, or primary + extras


@dataclass(frozen=True)
class StageSpec:
    model: str  # model name as registered on chain
    num_blocks: int  # blocks in the whole model
    start: int  # first block served (inclusive)
    end: int  # block after the last one served (exclusive)
    kind: str  # "causal-lm" or "classifier"

    @property
    def is_head(self) -> bool:
        return self.start == 0

    @property
    def is_tail(self) -> bool:
        return self.end == self.num_blocks


class Stage(Protocol):
    spec: StageSpec
    device: torch.device
    dtype: torch.dtype

    def new_cache(self) -> Any | None:
        """A fresh per-session cache (KV for decoders), or None if stateless."""

    def cache_len(self, cache: Any | None) -> int:
        """Number of positions already held in ``cache`` (0 for None)."""

    def forward(self, x: Activation, cache: Any | None = None, *, last: bool = False) -> Activation:
        """Run the served span on ``x``; appends to ``cache`` if given.

        ``last``: the caller needs the output of the last position only (a
        generating tail samples from it), so a tail may compute its head for
        that position alone, as transformers' ``generate`` does. Other stages
        ignore it: the next stage needs every position.
        """

    def cache_bytes(self, cache: Any | None) -> int:
        """Memory held by ``cache`` in bytes (for the session memory cap)."""


class Stateless:
    """The cache half of :class:`Stage` for stages that keep nothing between steps (one-pass
    encoders, user models): no cache, no positions, no bytes."""

    def new_cache(self) -> None:
        return None

    def cache_len(self, cache: Any | None) -> int:
        return 0

    def cache_bytes(self, cache: Any | None) -> int:
        return 0


def tensors(a: Activation) -> tuple[torch.Tensor, ...]:
    """Every tensor of an activation, primary first."""
    return a if isinstance(a, tuple) else (a,)


def to_stage(a: Activation, device: torch.device, dtype: torch.dtype) -> Activation:
    """``a`` on ``device``, floating tensors in ``dtype`` (ids and masks keep theirs)."""
    out = tuple(t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in tensors(a))
    return out if isinstance(a, tuple) else out[0]
