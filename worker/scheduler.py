"""Every forward of a stage runs on one thread, and concurrent sessions' steps run as one batch.

Each session's step arrives on its own handler thread (a hop) or head thread
and calls :meth:`StepScheduler.run`. The stage's thread takes the oldest
request and, if the stage can batch (``stage.batchable()``), every waiting
request of the same kind: one-position decode steps together, prompts into
empty caches together (up to ``max_batch``), and runs them in one forward
(``stage.forward_batch``). Before it runs, it waits for company while steps
keep arriving less than ``window_s`` apart (the steps an upstream batch sends
out arrive as such a burst), at most ``MAX_WAIT_WINDOWS`` windows, and only
while some session open on this stage is missing and the sessions the oldest
request last ran with (its group) are not all in: with several groups going
round the ring, each runs as soon as its own members are in, in the order it
ran last time (so the stage can keep its batch cache), and a group whose
members are elsewhere in the ring is not waited for. A group's own missing
members, and sessions that joined but have not run a step here yet, are
waited for up to the cap (``MAX_WAIT_WINDOWS`` windows) even when they come
further apart than a window: a split batch stays split for the rest of the
sessions, and on a memory- or launch-bound stage two half batches cost nearly
twice one whole. Prompts bound for a next hop run in forwards of at most
``prompt_chunk_tokens`` positions, so the next stage starts on the first chunk
while this one runs the next (a stage-after-stage prefill leaves all but one
stage idle); the sessions of those chunks come back for their first decode step
a chunk apart and wait for one another (at most :data:`FIRST_DECODE_WAIT_S`), so
they decode as one group again. Steps that came in one batch message
(``submit_many(whole=True)``: the sender cut the batch there) wait for no other
session. Each
session's output goes back to its own thread, which checks its message's
signature before anything derived from it leaves the node, as before.
Sessions join with :meth:`StepScheduler.join` when they open and leave with
:meth:`StepScheduler.release`; stages that cannot batch run every request
alone, in arrival order.

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
from worker.steptimes import StepTimes

logger = logging.getLogger(__name__)

IDLE_S = 30.0  # the stage's thread ends after this long without a request, seconds
MAX_WAIT_WINDOWS = 10  # a step waits for company at most this many windows in all
PROMPT_WAIT_WINDOWS = 40  # a prompt waits this long for sessions that opened with it (their OPENs take turns)
FIRST_DECODE_WAIT_S = 0.5  # a first decode step waits at most this long for the sessions whose prompts were
# cut from the same wave, seconds (they are still on their way round the ring)


class StageBusy(TesseraError):
    """The stage did not get to a step in time (overloaded); retry later or elsewhere."""


class _Request:
    __slots__ = ("cache", "done", "error", "kind", "last", "out", "x", "queued", "started", "ended", "size", "tag",
                 "batch", "peers", "whole")

    def __init__(self, x: torch.Tensor, cache: Any, last: bool, kind: str | None, tag: Any = None,
                 whole: bool = False):
        self.x, self.cache, self.last, self.kind = x, cache, last, kind  # kind: "decode", "prompt" or None
        self.tag = tag  # where its output goes next (the next hop's endpoint), or None
        self.batch = 0  # the forward it ran in (a number unique to this scheduler)
        self.peers = 1  # requests of that forward with the same (non-None) tag, itself included
        self.done = threading.Event()
        self.out: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.queued = time.perf_counter()  # when it was handed in, then when its forward started and ended
        self.started = self.ended = self.queued
        self.size = 1  # requests in the forward it ran in
        self.whole = whole  # handed in with others as one batch the sender cut: it waits for no one else


class StepScheduler:
    """The one thread that runs ``stage``: concurrent sessions' steps batched, the rest alone."""

    def __init__(self, stage: Stage, window_s: float = 0.005, max_batch: int = 64, idle_s: float = IDLE_S,
                 prompt_chunk_tokens: int = 0):
        self._stage = weakref.ref(stage)  # a stage the node dropped is not kept alive by its scheduler
        self.window_s, self.max_batch, self.idle_s = window_s, max_batch, idle_s
        self.prompt_chunk_tokens = prompt_chunk_tokens  # > 0: prompts bound for a next hop run in forwards of
        # at most this many positions (a single longer prompt runs alone), so the next stage starts on the first
        # while this one runs the rest; their sessions' first decode steps wait for one another here
        self._wave: set[int] = set()  # ids of caches whose prompt ran here in such a cut and that have not decoded
        self._batchable = max_batch > 1 and bool(getattr(stage, "batchable", lambda: False)())
        self._cv = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._open: set[int] = set()  # ids of the caches of sessions open on this stage
        self._groups: dict[int, tuple[int, ...]] = {}  # cache id -> the ids of the batch it last ran in, in order
        self._stepped: set[int] = set()  # ids of the open sessions' caches that have run a step here
        self._thread: threading.Thread | None = None
        self.steps = 0  # requests run, count
        self.forwards = 0  # forwards run, count (numbers them: _Request.batch)
        self.batches = 0  # forwards of more than one request, count
        self.batched_steps = 0  # requests run inside those, count
        self.cpu_s = 0.0  # CPU time of the stage's thread in forwards, seconds

    def join(self, cache: Any) -> None:
        """A session with ``cache`` opened on this stage: batches may wait (a window) for its steps."""
        with self._cv:
            self._open.add(id(cache))

    def release(self, cache: Any) -> None:
        """The session of ``cache`` ended: no batch waits for it any more."""
        with self._cv:
            self._open.discard(id(cache))
            self._stepped.discard(id(cache))
            self._wave.discard(id(cache))
            self._groups.pop(id(cache), None)
            self._cv.notify_all()
            ended = not self._open
        stage = self._stage()
        if ended and stage is not None and hasattr(stage, "end_batch"):
            stage.end_batch()  # its memory is not held past the last session that used it

    def run(self, x: torch.Tensor, cache: Any, last: bool = False, timeout_s: float = 60.0,
            times: StepTimes | None = None) -> torch.Tensor:
        """``stage.forward(x, cache, last=last)``, run on the stage's thread (batched with other sessions'
        steps when it can); StageBusy if it has not run within ``timeout_s``. ``times`` hears how long
        the step queued, how long its forward ran and in how large a batch."""
        return self.wait(self.submit(x, cache, last), timeout_s, times)

    def submit(self, x: torch.Tensor, cache: Any, last: bool = False, tag: Any = None) -> _Request:
        """Hand in one step without waiting for it (:meth:`wait` does); ``tag``: where its output goes
        next, so that the request learns how many of its forward's requests go there too (``peers``)."""
        return self.submit_many([(x, cache)], last, [tag])[0]

    def submit_many(self, steps: list[tuple[torch.Tensor, Any]], last: bool = False,
                    tags: list[Any] | None = None, whole: bool = False) -> list[_Request]:
        """Hand in several sessions' steps at once (a batch that arrived in one message): they are
        queued together, so the stage's thread finds them all when it gathers a batch. ``whole``: the
        sender cut the batch there (it ran them as one forward), so it does not wait for other sessions."""
        reqs = [_Request(x, cache, last, self._kind(x, cache), tags[i] if tags else None, whole)
                for i, (x, cache) in enumerate(steps)]
        with self._cv:
            self._queue.extend(reqs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="stage-steps", daemon=True)
                self._thread.start()
            self._cv.notify_all()
        return reqs

    def wait(self, req: _Request, timeout_s: float = 60.0, times: StepTimes | None = None) -> torch.Tensor:
        """The output of a submitted step once it ran; StageBusy if it has not run within ``timeout_s``."""
        if not req.done.wait(timeout_s):
            raise StageBusy(f"the stage did not run this step within {timeout_s:g} s; it is overloaded, retry later")
        if req.error is not None:
            raise req.error
        if times is not None:
            times.ran(req.started - req.queued, req.ended - req.started, req.size)
        return req.out

    def _kind(self, x: torch.Tensor, cache: Any) -> str | None:
        """"decode" (one position onto a cache), "prompt" (into an empty cache), None: runs alone."""
        if not self._batchable or cache is None or x.dim() < 2 or x.shape[0] != 1:
            return None
        stage = self._stage()
        if stage is not None and stage.cache_len(cache) == 0:
            return "prompt"
        return "decode" if x.shape[1] == 1 else None

    # ------------------------------------------------------------------ the stage's thread
    def _loop(self) -> None:
        while True:
            with self._cv:
                if not self._queue and not self._cv.wait_for(lambda: self._queue, self.idle_s):
                    self._thread = None
                    return
                first = self._queue.popleft()
                batch = self._gather(first) if first.kind else [first]
            try:
                self._execute(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting session hears of it
                for r in batch:
                    r.error = exc
            finally:
                for r in batch:
                    r.done.set()

    def _gather(self, first: _Request) -> list[_Request]:
        """``first`` and the waiting steps that can run with it (lock held): waits up to the window
        while an open session is missing, until ``first``'s group is complete."""
        batch = [first]
        group = self._groups.get(id(first.cache), ())
        start = time.monotonic()
        gap_end = start + self.window_s
        chunk = self.prompt_chunk_tokens if first.kind == "prompt" and first.tag is not None else 0
        positions = first.x.shape[1]
        wave = first.kind == "decode" and id(first.cache) in self._wave  # a first decode after a cut prefill
        while True:
            took = [r for r in self._queue if self._fits(first, r)][: self.max_batch - len(batch)]
            if chunk:  # prompts bound on: the chunk closes at its positions
                kept = []
                for r in took:
                    if positions + r.x.shape[1] > chunk:
                        break
                    positions += r.x.shape[1]
                    kept.append(r)
                took = kept
            for r in took:
                self._queue.remove(r)
                batch.append(r)
            now = time.monotonic()
            if took:
                gap_end = now + self.window_s  # a burst (one upstream batch sent out) is caught whole
            here = {id(r.cache) for r in batch}
            everyone = self._open <= here
            group_in = bool(group) and all(c in here for c in group  # members since gone or regrouped: not waited for
                                           if c in self._open and self._groups.get(c) == group)
            if wave:  # the sessions whose prompts this stage cut with first's: one group again from here on
                group_in = not (self._wave & self._open) - here
            # a group's missing members, and (for prompts) sessions that opened but have not stepped here
            # yet, are on their way: waited for up to the cap however far apart they come (a burst from
            # upstream has gaps while the sender's threads take turns); otherwise a batch closes one window
            # after the last arrival. A batch the sender cut (``whole``) waits for no one.
            fresh_missing = first.kind == "prompt" and not first.whole and bool(self._open - self._stepped - here)
            coming = ((bool(group) or wave) and not group_in) or fresh_missing
            if wave:
                cap = start + FIRST_DECODE_WAIT_S
            else:
                cap = start + (PROMPT_WAIT_WINDOWS if fresh_missing else MAX_WAIT_WINDOWS) * self.window_s
            left = (cap if coming else min(gap_end, cap)) - now
            if (len(batch) >= self.max_batch or everyone or group_in or left <= 0
                    or (chunk and positions >= chunk) or (first.whole and not coming)):
                break
            self._cv.wait(left)
        self._stepped.update(id(r.cache) for r in batch)
        if first.kind == "decode":
            self._wave.difference_update(here)
        elif chunk:
            self._wave.update(here)
        if len(batch) > 1:
            order = {c: i for i, c in enumerate(group)}
            batch.sort(key=lambda r: order.get(id(r.cache), len(order)))  # the group's order: its cache reused
            ids = tuple(id(r.cache) for r in batch)
            self._groups.update(dict.fromkeys(ids, ids))
        return batch

    def _fits(self, first: _Request, r: _Request) -> bool:
        return (r.kind == first.kind and r.last == first.last and r.x.dtype == first.x.dtype
                and r.x.dim() == first.x.dim() and r.x.shape[2:] == first.x.shape[2:] and r.cache is not first.cache)

    def _execute(self, batch: list[_Request]) -> None:
        stage = self._stage()
        if stage is None:
            raise StageBusy("this stage was unloaded; open the session again")
        t0, started = time.thread_time(), time.perf_counter()
        with torch.inference_mode():
            if len(batch) == 1:
                outs = [stage.forward(batch[0].x, batch[0].cache, last=batch[0].last)]
            else:
                outs = stage.forward_batch([r.x for r in batch], [r.cache for r in batch], last=batch[0].last)
                self.batches += 1
                self.batched_steps += len(batch)
            if torch.device(stage.device).type != "cpu":
                outs = to_host(outs)  # one copy for the batch (it also waits for the forward to end)
        for r, y in zip(batch, outs):
            r.out = y
        ended = time.perf_counter()
        self.forwards += 1
        tags: dict[Any, int] = {}
        for r in batch:
            tags[r.tag] = tags.get(r.tag, 0) + 1
        for r in batch:
            r.started, r.ended, r.size, r.batch = started, ended, len(batch), self.forwards
            r.peers = tags[r.tag] if r.tag is not None else 1
        self.steps += len(batch)
        self.cpu_s += time.thread_time() - t0


def to_host(outs: list) -> list:
    """A stage's outputs on an accelerator as float32 CPU tensors (tuples element-wise), moved in one
    copy when they are rows of the same shape (a decode batch). Everything a step's output feeds (its
    receipt, the codec, sampling) reads it on the CPU in float32: without this each session's thread
    made two or three synchronising copies of its own row, one after another."""
    if all(isinstance(y, torch.Tensor) for y in outs) and len({tuple(y.shape[1:]) for y in outs}) == 1:
        return list(torch.cat(outs).to(torch.float32).cpu().split([y.shape[0] for y in outs]))
    return [tuple(t.to(torch.float32).cpu() for t in y) if isinstance(y, tuple) else y.to(torch.float32).cpu()
            for y in outs]


_SCHEDULERS: "weakref.WeakKeyDictionary[Any, StepScheduler]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def scheduler_for(stage: Stage, window_s: float = 0.005, max_batch: int = 64,
                  prompt_chunk_tokens: int = 0) -> StepScheduler:
    """The process's scheduler of ``stage`` (made on first use with these settings)."""
    with _LOCK:
        s = _SCHEDULERS.get(stage)
        if s is None:
            s = _SCHEDULERS[stage] = StepScheduler(stage, window_s, max_batch, prompt_chunk_tokens=prompt_chunk_tokens)
        return s
