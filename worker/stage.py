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
* tail stage output: logits, ``(B, T, V)`` for language models (``(B, 1, V)``
  with ``last=True``), ``(B, K)`` for classifiers.

Decoders keep a per-session cache returned by ``new_cache()`` and passed to
every ``forward`` call of that session; the cache knows how many positions it
holds, so positions need not be passed. Stateless models return ``None`` from
``new_cache`` and ignore the argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


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

    def forward(self, x: torch.Tensor, cache: Any | None = None, *, last: bool = False) -> torch.Tensor:
        """Run the served span on ``x``; appends to ``cache`` if given.

        ``last``: the caller needs the output of the last position only (a
        generating tail samples from it), so a tail may compute its head for
        that position alone, as transformers' ``generate`` does. Other stages
        ignore it: the next stage needs every position.
        """

    def cache_bytes(self, cache: Any | None) -> int:
        """Memory held by ``cache`` in bytes (for the session memory cap)."""
