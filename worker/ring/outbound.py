"""Deadlines on the next hop's answers: :class:`PeerTimeout` and the one watchdog thread per process
that cancels the streams (:class:`worker.ring.link.Link`, :class:`worker.ring.batch.BatchStream`)
whose answer is overdue."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Protocol

from proto.errors import TesseraError

WATCH_PERIOD_S = 0.1  # how often the watchdog looks for overdue answers, seconds


class PeerTimeout(TesseraError):
    """The next hop did not answer in time (a stalled or vanished peer)."""


class Watched(Protocol):
    def expire_if_overdue(self, now: float) -> None:
        """Cancel the stream if its answer is overdue (``now``: time.monotonic())."""


class _Watchdog:
    """One thread per process that cancels the streams of next hops that stay silent past their due time."""

    def __init__(self):
        self._links: weakref.WeakSet[Watched] = weakref.WeakSet()
        self._lock = threading.Lock()
        threading.Thread(target=self._loop, name="link-watchdog", daemon=True).start()

    def watch(self, link: Watched) -> None:
        with self._lock:
            self._links.add(link)

    def _loop(self) -> None:
        while True:
            time.sleep(WATCH_PERIOD_S)
            with self._lock:
                links = list(self._links)
            now = time.monotonic()
            for link in links:
                link.expire_if_overdue(now)


_WATCHDOG: _Watchdog | None = None
_WATCHDOG_LOCK = threading.Lock()


def _watchdog() -> _Watchdog:
    global _WATCHDOG
    with _WATCHDOG_LOCK:
        if _WATCHDOG is None:
            _WATCHDOG = _Watchdog()
        return _WATCHDOG
