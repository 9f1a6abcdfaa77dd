"""The session table: per-session state of one worker, with a TTL and a memory cap.

A session is one (job, replica) pass through this worker: the next step it
expects, and its pipeline (``worker.ring.pipeline.Pipeline``: the stage's KV
cache, the stream to the next hop, the tokens the tail sampled). Pure
bookkeeping; the clock is injectable so tests need not sleep.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from proto.errors import TesseraError

logger = logging.getLogger(__name__)

SessionKey = tuple[int, int]  # (job id, replica)


class SessionError(TesseraError):
    """A session cannot be opened or used (table full, memory cap, expired)."""


@dataclass
class Session:
    key: SessionKey
    pipe: Any = None  # this node's part of the replica (a Pipeline, with close()); set right after open
    next_step: int = 0  # step the next STEP message must carry
    last_used: float = 0.0  # clock time of the last message, seconds
    cache_bytes: int = 0  # memory held by the pipeline's cache, bytes
    busy_s: float = 0.0  # time handling steps (decode, compute, encode, sign, wait), seconds

    def close(self) -> None:
        if self.pipe is not None:
            try:
                self.pipe.close()
            except Exception:  # the peer may already be gone
                logger.debug("closing the pipeline of %s failed", self.key, exc_info=True)
            self.pipe = None


class SessionTable:
    """Open sessions of one worker; thread-safe."""

    def __init__(self, ttl_s: float, max_bytes: int, max_sessions: int,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.max_bytes, self.max_sessions = ttl_s, max_bytes, max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[SessionKey, Session] = {}

    def open(self, key: SessionKey) -> Session:
        """Create a session (its pipeline is the caller's to set); refuse if it exists, the table
        is full or memory is spent."""
        with self._lock:
            self._expire_locked()
            if key in self._sessions:
                raise SessionError(f"session job {key[0]} replica {key[1]} is already open here")
            if len(self._sessions) >= self.max_sessions:
                raise SessionError(f"worker is full ({self.max_sessions} sessions); retry later")
            if self._used_locked() >= self.max_bytes:
                raise SessionError(f"session memory cap of {self.max_bytes} bytes is reached; retry later")
            s = Session(key, last_used=self._clock())
            self._sessions[key] = s
            return s

    def get(self, key: SessionKey) -> Session:
        """The live session ``key``; SessionError if unknown or expired."""
        with self._lock:
            self._expire_locked()
            s = self._sessions.get(key)
            if s is None:
                raise SessionError(f"no open session for job {key[0]} replica {key[1]} (expired or never opened)")
            s.last_used = self._clock()
            return s

    def account(self, s: Session, cache_bytes: int) -> None:
        """Record ``s``'s new cache size; close it and raise if the cap is exceeded."""
        with self._lock:
            s.cache_bytes = cache_bytes
            s.last_used = self._clock()
            if self._used_locked() > self.max_bytes:
                self._drop_locked(s.key)
                raise SessionError(f"session job {s.key[0]} replica {s.key[1]} pushed KV memory past the "
                                   f"cap of {self.max_bytes} bytes and was closed")

    def close(self, key: SessionKey) -> bool:
        with self._lock:
            return self._drop_locked(key)

    def expire(self) -> int:
        """Close idle sessions past their TTL; return how many."""
        with self._lock:
            return self._expire_locked()

    def used_bytes(self) -> int:
        with self._lock:
            return self._used_locked()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close_all(self) -> None:
        with self._lock:
            for k in list(self._sessions):
                self._drop_locked(k)

    def _used_locked(self) -> int:
        return sum(s.cache_bytes for s in self._sessions.values())

    def _drop_locked(self, key: SessionKey) -> bool:
        s = self._sessions.pop(key, None)
        if s is not None:
            s.close()
        return s is not None

    def _expire_locked(self) -> int:
        now = self._clock()
        dead = [k for k, s in self._sessions.items() if now - s.last_used > self.ttl_s]
        for k in dead:
            logger.info("session job %s replica %s expired after %.0f s idle", k[0], k[1], self.ttl_s)
            self._drop_locked(k)
        return len(dead)
