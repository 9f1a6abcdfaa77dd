"""One forward for the decode steps of many sessions of a decoder stage.

Each session keeps its own :class:`worker.shard.decoder.SpanCache`. For a
batched decode step their served layers' keys and values are left-padded to
the longest and stacked; prompts that arrive together (into empty caches) are
left-padded to the longest prompt. An attention mask hides the padding and
every row gets its own positions, so each row computes what it would alone:
the same greedy tokens, logits equal up to float rounding of a wider matmul.
Afterwards each session's cache becomes its row of the grown batch cache (a
view, no copy). When the same sessions come back in the same order with
caches untouched since, the batch cache of their last step is used as it is;
the stage keeps one per group of sessions (:class:`BatchStates`, the last
``MAX_KEPT``), so groups that take turns on the stage are not gathered again
at every step.

Only stages whose whole model has full-attention layers (``DynamicLayer``)
batch: a sliding-window layer trims its cache by its own length, which
padding would shift.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections import OrderedDict
from typing import Sequence

import torch
from transformers.cache_utils import DynamicLayer

KV = tuple[torch.Tensor, torch.Tensor]
MAX_KEPT = 4  # batch caches kept, one per group of sessions (each only holds rows its sessions' caches hold)


def batchable(stage) -> bool:
    """Whether ``stage`` (a :class:`DecoderStage`) can run sessions together exactly."""
    cache = stage.new_cache()
    return all(type(layer) is DynamicLayer for layer in cache.layers) and _forward_takes(type(stage.model),
                                                                                          "attention_mask")


class BatchState:
    """The batch cache of a stage's last batched step, kept for the next one of the same sessions."""

    __slots__ = ("caches", "views", "cache")

    def __init__(self):
        self.caches: tuple = ()  # weak references to the sessions' caches, in batch order
        self.views: list[list[KV]] = []  # per session, the (keys, values) views it was given, per served layer
        self.cache = None  # the batch SpanCache they are rows of

    def reusable(self, caches: Sequence, served: range) -> bool:
        if len(caches) != len(self.caches) or any(a is not b() for a, b in zip(caches, self.caches)):
            return False
        return all(c.layers[i].keys is kv[0] and c.layers[i].values is kv[1]
                   for c, views in zip(caches, self.views) for i, kv in zip(served, views))


class BatchStates:
    """The batch states of the last ``MAX_KEPT`` groups of sessions, by the caches in batch order."""

    __slots__ = ("_kept",)

    def __init__(self):
        self._kept: OrderedDict[tuple[int, ...], BatchState] = OrderedDict()

    def of(self, caches: Sequence) -> BatchState:
        """The state of the batch of ``caches`` (in this order): the kept one, or a new one (then the
        kept ones that share a session with it go: their rows are about to be copied out of them)."""
        key = tuple(id(c) for c in caches)
        state = self._kept.pop(key, None)
        if state is None:
            state, mine = BatchState(), set(key)
            for old in [k for k in self._kept if mine.intersection(k)]:
                del self._kept[old]
        self._kept[key] = state
        while len(self._kept) > MAX_KEPT:
            self._kept.popitem(last=False)
        return state


def forward_batch(stage, xs: Sequence[torch.Tensor], caches: Sequence, last: bool,
                  state: BatchState | None = None) -> list[torch.Tensor]:
    """Run the inputs ``xs`` of sessions with ``caches`` as one batch: one-position decode steps
    (``(1, 1)`` ids or ``(1, 1, C)`` hidden), or prompts of any length into empty caches. Returns each
    session's output as it would be alone; its cache has grown by its input."""
    served = range(stage.spec.start, stage.spec.end)
    lens = [stage.cache_len(c) for c in caches]
    sizes = [x.shape[1] for x in xs]
    longest, widest = max(lens), max(sizes)
    if widest > 1 and longest > 0:
        raise ValueError("a batch holds either one-position steps or prompts into empty caches")
    if state is not None and state.reusable(caches, served):  # rows keep their padding: still aligned
        batch = state.cache
    else:
        batch = _gather(stage, caches, lens, longest, served)
    mask = torch.zeros(len(xs), longest + widest, dtype=torch.long, device=stage.device)
    for row, (n, t) in enumerate(zip(lens, sizes)):
        mask[row, longest - n:longest] = 1
        mask[row, longest + widest - t:] = 1
    kw = {"attention_mask": mask}
    if _takes_positions(stage):  # otherwise the model derives positions from the mask (ALiBi)
        kw["position_ids"] = (mask.cumsum(-1)[:, longest:] - 1).clamp(min=0)  # (B, widest): each row's own
    x = torch.cat([_left_pad(t.to(stage.device), widest) for t in xs])  # (B, T) ids or (B, T, C) hidden
    y = stage.forward(x, batch, last=last, **kw)
    views = []
    for row, (c, n, t) in enumerate(zip(caches, lens, sizes)):
        skip = longest - n if widest == 1 else widest - t  # this row's padding at the front of the batch cache
        mine = []
        for i in served:
            k, v = batch.layers[i].keys[row:row + 1, :, skip:], batch.layers[i].values[row:row + 1, :, skip:]
            _assign(c.layers[i], k, v)
            mine.append((k, v))
        views.append(mine)
    if state is not None:
        state.caches, state.views, state.cache = tuple(weakref.ref(c) for c in caches), views, batch
    keep = y.shape[1] == widest  # all positions came back (not just the last one of a tail)
    return [y[row:row + 1, widest - t:] if keep else y[row:row + 1] for row, t in enumerate(sizes)]


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` ``(1, T)`` or ``(1, T, C)`` with zeros in front up to ``width`` positions."""
    pad = width - x.shape[1]
    if not pad:
        return x
    return torch.nn.functional.pad(x, (pad, 0) if x.dim() == 2 else (0, 0, pad, 0))


def _takes_positions(stage) -> bool:
    return _forward_takes(type(stage.model), "position_ids")


@functools.lru_cache(maxsize=64)
def _forward_takes(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.forward).parameters


def _gather(stage, caches: Sequence, lens: list[int], longest: int, served: range):
    """A fresh batch cache: each served layer's keys and values left-padded to ``longest`` and stacked."""
    batch = stage.new_cache()
    if longest == 0:
        return batch
    like = next(c for c, n in zip(caches, lens) if n)
    for i in served:
        ref = like.layers[i].keys
        keys, values = [], []
        for c, n in zip(caches, lens):
            pad = longest - n
            if n == 0:
                keys.append(ref.new_zeros(1, ref.shape[1], longest, ref.shape[3]))
                values.append(like.layers[i].values.new_zeros(1, like.layers[i].values.shape[1], longest,
                                                              like.layers[i].values.shape[3]))
                continue
            k, v = c.layers[i].keys, c.layers[i].values
            keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)) if pad else k)
            values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)) if pad else v)
        _assign(batch.layers[i], torch.cat(keys), torch.cat(values))
    return batch


def _assign(layer: DynamicLayer, keys: torch.Tensor, values: torch.Tensor) -> None:
    layer.dtype, layer.device = keys.dtype, keys.device
    layer.keys, layer.values, layer.is_initialized = keys, values, True
