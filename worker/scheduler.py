"""Every forward of a stage runs on one thread, and concurrent sessions' decode steps run as one batch.

Each session's step arrives on its own handler thread (a hop) or head thread
and calls :meth:`StepScheduler.run`. The stage's thread takes the oldest
request; if it is a one-position decode step of a stage that can batch
(``stage.batchable()``), it waits up to ``window_s`` for the rest of the group
that ran together last time, takes every other decode step already waiting
(up to ``max_batch``) and runs them in one forward
(``stage.forward_batch``); each session's output goes back to its own thread,
which checks its message's signature before anything derived from it leaves
the node, as before. Prompts (several positions), classifier inputs and stages
that cannot batch run alone, in arrival order. Sessions join a batch on their
next step and leave it by not coming back (:meth:`StepScheduler.release` ends
the wait for them at once).

One scheduler per stage object and process (:func:`scheduler_for`); its thread
starts on the first request and ends after ``IDLE_S`` without one.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from typing import Any

import torch

from proto.errors import TesseraError
from worker.stage import Stage

logger = logging.getLogger(__name__)

IDLE_S = 30.0  # the stage's thread ends after this long without a request, seconds


class StageBusy(TesseraError):
    """The stage did not get to a step in time (overloaded); retry later or elsewhere."""


class _Request:
    __slots__ = ("x", "cache", "last", "done", "out", "error")

    def __init__(self, x: torch.Tensor, cache: Any, last: bool):
        self.x, self.cache, self.last = x, cache, last
        self.done = threading.Event()
        self.out: torch.Tensor | None = None
        self.error: BaseException | None = None


class StepScheduler:
    """The one thread that runs ``stage``: decode steps of concurrent sessions batched, the rest alone."""

    def __init__(self, stage: Stage, window_s: float = 0.005, max_batch: int = 64, idle_s: float = IDLE_S):
        self._stage = weakref.ref(stage)  # a stage the node dropped is not kept alive by its scheduler
        self.window_s, self.max_batch, self.idle_s = window_s, max_batch, idle_s
        self._batchable = max_batch > 1 and bool(getattr(stage, "batchable", lambda: False)())
        self._cv = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._group: list[int] = []  # ids of the caches that ran together last, in that order
        self._thread: threading.Thread | None = None
        self.steps = 0  # requests run, count
        self.batches = 0  # forwards of more than one request, count
        self.batched_steps = 0  # requests run inside those, count

    def run(self, x: torch.Tensor, cache: Any, last: bool = False, timeout_s: float = 60.0) -> torch.Tensor:
        """``stage.forward(x, cache, last=last)``, run on the stage's thread (batched with other sessions'
        decode steps when it can); StageBusy if it has not run within ``timeout_s``."""
        req = _Request(x, cache, last)
        with self._cv:
            self._queue.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="stage-steps", daemon=True)
                self._thread.start()
            self._cv.notify_all()
        if not req.done.wait(timeout_s):
            raise StageBusy(f"the stage did not run this step within {timeout_s:g} s; it is overloaded, retry later")
        if req.error is not None:
            raise req.error
        return req.out

    def release(self, cache: Any) -> None:
        """The session of ``cache`` ended: no batch waits for it any more."""
        with self._cv:
            if id(cache) in self._group:
                self._group.remove(id(cache))
                self._cv.notify_all()
            ended = not self._group
        stage = self._stage()
        if ended and stage is not None and hasattr(stage, "end_batch"):
            stage.end_batch()  # its memory is not held past the last session that used it

    # ------------------------------------------------------------------ the stage's thread
    def _loop(self) -> None:
        while True:
            with self._cv:
                if not self._queue and not self._cv.wait_for(lambda: self._queue, self.idle_s):
                    self._thread = None
                    return
                first = self._queue.popleft()
                batch = self._gather(first) if self._decode(first) else [first]
            try:
                self._execute(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting session hears of it
                for r in batch:
                    r.error = exc
            finally:
                for r in batch:
                    r.done.set()

    def _decode(self, r: _Request) -> bool:
        return self._batchable and r.cache is not None and r.x.dim() >= 2 and r.x.shape[:2] == (1, 1)

    def _gather(self, first: _Request) -> list[_Request]:
        """``first`` and the decode steps that can run with it (lock held): wait up to the window for
        the rest of the last group, take everything compatible that is waiting."""
        batch = [first]
        deadline = time.monotonic() + self.window_s
        while True:
            for r in [r for r in self._queue if len(batch) < self.max_batch and self._fits(first, r)]:
                self._queue.remove(r)
                batch.append(r)
            here = {id(r.cache) for r in batch}
            missing = [c for c in self._group if c not in here]
            left = deadline - time.monotonic()
            if len(batch) >= self.max_batch or not missing or left <= 0:
                break
            self._cv.wait(left)
        order = {c: i for i, c in enumerate(self._group)}
        batch.sort(key=lambda r: order.get(id(r.cache), len(order)))  # the last group's order: its cache reused
        self._group = [id(r.cache) for r in batch] if len(batch) > 1 else self._group
        return batch

    def _fits(self, first: _Request, r: _Request) -> bool:
        return (self._decode(r) and r.last == first.last and r.x.dtype == first.x.dtype
                and r.x.shape == first.x.shape and r.cache is not first.cache)

    def _execute(self, batch: list[_Request]) -> None:
        stage = self._stage()
        if stage is None:
            raise StageBusy("this stage was unloaded; open the session again")
        with torch.inference_mode():
            if len(batch) == 1:
                r = batch[0]
                r.out = stage.forward(r.x, r.cache, last=r.last)
            else:
                outs = stage.forward_batch([r.x for r in batch], [r.cache for r in batch], last=batch[0].last)
                for r, y in zip(batch, outs):
                    r.out = y
                self.batches += 1
                self.batched_steps += len(batch)
        self.steps += len(batch)


_SCHEDULERS: "weakref.WeakKeyDictionary[Any, StepScheduler]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def scheduler_for(stage: Stage, window_s: float = 0.005, max_batch: int = 64) -> StepScheduler:
    """The process's scheduler of ``stage`` (made on first use with these settings)."""
    with _LOCK:
        s = _SCHEDULERS.get(stage)
        if s is None:
            s = _SCHEDULERS[stage] = StepScheduler(stage, window_s, max_batch)
        return s
