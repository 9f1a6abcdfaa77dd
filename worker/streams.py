"""The Forward streams of one server, and the limits that keep idle ones from starving it.

The gRPC server runs each stream on a handler thread of a bounded pool. A
stream that carries a live session is *live* (at most one session per stream,
so at most ``max_sessions`` of them); any other stream (not opened yet, or
done) is *idle*. Idle streams are capped overall and per peer address: past a
cap the oldest idle stream is ended, so a peer that opens streams and sends
nothing only ever evicts its own, and Ping, Info and honest sessions always
find a thread. :meth:`StreamBook.sweep` turns a live stream whose session
ended (expired, or replaced by a newer OPEN) idle again, and ends streams
quiet for longer than their limit (``idle_s``; a live one after ``live_s``),
except while a message of theirs is being handled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

logger = logging.getLogger(__name__)


class StreamEntry:
    __slots__ = ("peer", "cancel", "alive", "last", "live", "busy")

    def __init__(self, peer: str, cancel: Callable[[], None], alive: Callable[[], bool], now: float):
        self.peer, self.cancel = peer, cancel  # peer address without port; ends the stream
        self.alive = alive  # whether the stream's session is still open
        self.last = now  # clock time of the stream's last message (or its start), seconds
        self.live = False  # carries a live session
        self.busy = False  # one of its messages is being handled


class StreamBook:
    """Thread-safe registry of streams with idle caps and idle timeouts."""

    def __init__(self, max_idle: int, max_idle_per_peer: int, idle_s: float, live_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.max_idle, self.max_idle_per_peer, self.idle_s, self.live_s = max_idle, max_idle_per_peer, idle_s, live_s
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: OrderedDict[StreamEntry, None] = OrderedDict()  # oldest first
        self._idle_by_peer: dict[str, OrderedDict[StreamEntry, None]] = {}
        self._live: set[StreamEntry] = set()
        self.evicted = 0  # idle streams ended for a cap or a timeout, count

    def enter(self, peer: str, cancel: Callable[[], None], alive: Callable[[], bool] = lambda: True) -> StreamEntry:
        """Register a new (idle) stream, ending the oldest idle one of the same peer, or overall,
        past a cap. ``alive()``: whether the session the stream carries, if any, is still open."""
        e = StreamEntry(peer, cancel, alive, self._clock())
        with self._lock:
            mine = self._idle_by_peer.get(peer)
            victim = None
            if mine is not None and len(mine) >= self.max_idle_per_peer:
                victim = _oldest_quiet(mine)
            elif len(self._idle) >= self.max_idle:
                victim = _oldest_quiet(self._idle)
            if victim is not None:
                self._forget_idle(victim)
            self._add_idle(e)
        if victim is not None:
            self._end(victim, "idle stream cap reached")
        return e

    def begin(self, e: StreamEntry) -> None:
        """A message of ``e`` arrived."""
        with self._lock:
            e.busy, e.last = True, self._clock()

    def touch(self, e: StreamEntry) -> None:
        """``e``'s session made progress elsewhere (a step of it came in a batch): it is not quiet."""
        with self._lock:
            e.last = self._clock()

    def done(self, e: StreamEntry, live: bool) -> None:
        """``e``'s message was handled; ``live``: the stream now carries a live session."""
        with self._lock:
            e.busy, e.last = False, self._clock()
            if live and not e.live:
                self._forget_idle(e)
                self._live.add(e)
            elif not live and e.live:
                self._live.discard(e)
            e.live = live
            if not live and e not in self._idle:
                self._add_idle(e)

    def leave(self, e: StreamEntry) -> None:
        with self._lock:
            self._forget_idle(e)
            self._live.discard(e)

    def sweep(self) -> int:
        """Turn streams whose session ended idle; end streams quiet past their limit, and the oldest
        idle ones past a cap; return how many were ended."""
        now = self._clock()
        with self._lock:
            for e in [e for e in self._live if not e.busy and not e.alive()]:
                self._live.discard(e)
                e.live = False
                self._add_idle(e)
            quiet = [e for e in (*self._idle, *self._live)
                     if not e.busy and now - e.last > (self.live_s if e.live else self.idle_s)]
            for e in quiet:
                self._forget_idle(e)
                self._live.discard(e)
            for mine in self._idle_by_peer.values():
                quiet += _quiet_oldest_first(mine)[: max(0, len(mine) - self.max_idle_per_peer)]
            quiet += _quiet_oldest_first(self._idle)[: max(0, len(self._idle) - self.max_idle)]
            quiet = list(dict.fromkeys(quiet))
            for e in quiet:
                self._forget_idle(e)
        for e in quiet:
            self._end(e, "quiet for too long, or past the idle cap")
        return len(quiet)

    def counts(self) -> tuple[int, int]:
        """(live, idle) streams."""
        with self._lock:
            return len(self._live), len(self._idle)

    def _add_idle(self, e: StreamEntry) -> None:
        self._idle[e] = None
        self._idle_by_peer.setdefault(e.peer, OrderedDict())[e] = None

    def _forget_idle(self, e: StreamEntry) -> None:
        if e in self._idle:
            del self._idle[e]
            mine = self._idle_by_peer[e.peer]
            del mine[e]
            if not mine:
                del self._idle_by_peer[e.peer]

    def _end(self, e: StreamEntry, why: str) -> None:
        self.evicted += 1
        logger.debug("ending a stream from %s: %s", e.peer, why)
        try:
            e.cancel()
        except Exception:  # the stream may be ending by itself
            logger.debug("cancelling a stream from %s failed", e.peer, exc_info=True)


def _quiet_oldest_first(entries: OrderedDict[StreamEntry, None]) -> list[StreamEntry]:
    """Streams not handling a message (one whose first message runs, e.g. an OPEN waiting to be
    batched with others, is not idle), the longest quiet first."""
    return sorted((e for e in entries if not e.busy), key=lambda e: e.last)


def _oldest_quiet(entries: OrderedDict[StreamEntry, None]) -> StreamEntry | None:
    quiet = _quiet_oldest_first(entries)
    return quiet[0] if quiet else None
