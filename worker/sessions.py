"""The session table: per-session state of one worker, with deadlines and a memory cap.

A session is one (job, replica) pass through this worker, bound to the nonce
its OPEN carried: the next step it expects, and its pipeline
(``worker.ring.pipeline.Pipeline``: the stage's KV cache, the stream to the next
hop, the tokens the tail sampled). A session ends when it is closed, when it
stays idle past the TTL, or at its job's deadline; never while a step of it is
running. Memory is reserved before a step runs and counted in bytes of what the
session holds. :class:`OpenGuard` refuses stale and replayed OPENs. Pure
bookkeeping; the clocks are injectable so tests need not sleep.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from proto.errors import ProtocolError, TesseraError

logger = logging.getLogger(__name__)

SessionKey = tuple[int, int]  # (job id, replica)
TRIM_BYTES = 16 << 20  # give freed memory back to the OS once sessions this large are dropped


class SessionError(TesseraError):
    """A session cannot be opened or used (table full, memory cap, expired, replaced)."""


@dataclass(eq=False)
class Session:
    key: SessionKey
    nonce: bytes = b""  # the session nonce every message of this session repeats
    pipe: Any = None  # this node's part of the replica (a Pipeline, with close()); set right after open
    next_step: int = 0  # step the next STEP message must carry
    last_used: float = 0.0  # clock time a message of it last finished, seconds
    expires_at: float = math.inf  # clock time of the job's deadline, seconds
    held_bytes: int = 0  # memory the session holds between steps (its cache), bytes
    reserved_bytes: int = 0  # memory reserved for the step running now, bytes; 0 between steps
    busy: bool = False  # a message of it is being handled; never expired meanwhile
    dropped: bool = False  # left the table while busy: its pipeline closes when the message ends
    busy_s: float = 0.0  # time handling steps (decode, compute, encode, sign, wait), seconds
    touch: Any = None  # called when a step of it came in a batch (its own stream is quiet meanwhile)

    @property
    def charged(self) -> int:
        return max(self.held_bytes, self.reserved_bytes)

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
        self._closing: list[Session] = []  # dropped under the lock, closed after it (closing may wait on a peer)
        self._freed = 0  # bytes dropped since the last flush

    def open(self, key: SessionKey, nonce: bytes = b"", expires_at: float = math.inf) -> Session:
        """A new session (its pipeline is the caller's to set). It replaces an older session of the
        same key: only the planned predecessor, with a fresh OPEN, gets here, and a head that retries
        must not find its replica held by its own last attempt (or by a replay) until the TTL."""
        try:
            with self._lock:
                self._expire_locked()
                old = self._sessions.get(key)
                if old is not None:
                    logger.info("session job %s replica %s: replaced by a new OPEN", key[0], key[1])
                    self._drop_locked(old)
                if len(self._sessions) >= self.max_sessions:
                    raise SessionError(f"worker is full ({self.max_sessions} sessions); retry later")
                if self._used_locked() >= self.max_bytes:
                    raise SessionError(f"session memory cap of {self.max_bytes} bytes is reached; retry later")
                if expires_at <= self._clock():
                    raise SessionError(f"job {key[0]} is past its deadline")
                s = Session(key, nonce, last_used=self._clock(), expires_at=expires_at)
                self._sessions[key] = s
                return s
        finally:
            self._flush()

    def begin(self, s: Session) -> None:
        """Mark ``s`` busy for one message; SessionError if it expired, was replaced or its job's
        deadline passed."""
        try:
            with self._lock:
                if self._sessions.get(s.key) is not s:
                    raise SessionError(f"no open session for job {s.key[0]} replica {s.key[1]} (expired, "
                                       "replaced or closed)")
                if self._clock() > s.expires_at:
                    self._drop_locked(s)
                    raise SessionError(f"job {s.key[0]} replica {s.key[1]} is past its deadline")
                if s.busy:  # its stream and a batch, or two batches, at once: only one runs
                    raise SessionError(f"a message of job {s.key[0]} replica {s.key[1]} is already being "
                                       "handled; send its next one after the answer")
                s.busy = True
        finally:
            self._flush()

    def reserve(self, s: Session, nbytes: int) -> None:
        """Reserve ``nbytes`` for ``s``'s running step (what it will hold, plus the step's work) before
        the step runs; close ``s`` and raise if that passes the memory cap."""
        try:
            with self._lock:
                others = self._used_locked() - (s.charged if self._sessions.get(s.key) is s else 0)
                if others + nbytes > self.max_bytes:
                    self._drop_locked(s)
                    raise SessionError(f"session job {s.key[0]} replica {s.key[1]} needs about {nbytes} bytes "
                                       f"for this step; with {others} bytes held by others that passes this "
                                       f"node's cap of {self.max_bytes} bytes: retry later or on another node")
                s.reserved_bytes = nbytes
        finally:
            self._flush()

    def end(self, s: Session, held_bytes: int | None = None) -> None:
        """``s``'s message is done; ``held_bytes``: what it holds now (its cache), if it changed."""
        with self._lock:
            s.busy, s.reserved_bytes = False, 0
            if held_bytes is not None:
                s.held_bytes = held_bytes
            s.last_used = self._clock()
            if s.dropped:
                self._freed += s.held_bytes
                self._closing.append(s)
            elif self._used_locked() > self.max_bytes:
                self._drop_locked(s)
                logger.warning("session job %s replica %s held more than reserved and passed the memory cap; "
                               "closed", s.key[0], s.key[1])
        self._flush()

    def close(self, s: Session) -> bool:
        """Close ``s`` if it is still the table's session for its key (a stream that ends closes its own
        session, never one that replaced it)."""
        with self._lock:
            current = self._sessions.get(s.key) is s
            if current:
                self._drop_locked(s)
        self._flush()
        return current

    def expire(self) -> int:
        """Close idle sessions past their TTL or their job's deadline; return how many."""
        with self._lock:
            n = self._expire_locked()
        self._flush()
        return n

    def find(self, key: SessionKey, nonce: bytes) -> Session | None:
        """The open session of ``key`` if its nonce is ``nonce`` (a batched step names its session so)."""
        with self._lock:
            s = self._sessions.get(key)
        return s if s is not None and s.nonce == nonce else None

    def is_current(self, s: Session) -> bool:
        """Whether ``s`` is still the open session of its key."""
        return self._sessions.get(s.key) is s

    def used_bytes(self) -> int:
        with self._lock:
            return self._used_locked()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close_all(self) -> None:
        with self._lock:
            for s in list(self._sessions.values()):
                self._drop_locked(s)
        self._flush()

    def _flush(self) -> None:
        """Close what was dropped under the lock (a pipeline's close may wait on its next hop)."""
        with self._lock:
            todo, self._closing = self._closing, []
            freed, self._freed = self._freed, 0
        for s in todo:
            s.close()
        _trim(freed)

    def _used_locked(self) -> int:
        return sum(s.charged for s in self._sessions.values())

    def _drop_locked(self, s: Session) -> None:
        """Remove ``s``; its pipeline closes at the next flush, or when its running message ends."""
        if self._sessions.get(s.key) is s:
            del self._sessions[s.key]
        if s.busy:
            s.dropped = True
        else:
            self._freed += s.charged
            self._closing.append(s)

    def _expire_locked(self) -> int:
        now = self._clock()
        dead = [s for s in self._sessions.values()
                if not s.busy and (now - s.last_used > self.ttl_s or now > s.expires_at)]
        for s in dead:
            why = "its job's deadline passed" if now > s.expires_at else f"idle for {self.ttl_s:.0f} s"
            logger.info("session job %s replica %s expired: %s", s.key[0], s.key[1], why)
            self._drop_locked(s)
        return len(dead)


class OpenGuard:
    """Refuses an OPEN sent outside ``window_s`` of this node's clock or whose session nonce was
    seen before: a recorded session replayed on a new stream never gets a session.

    Nonces are kept for twice the window (older OPENs are stale anyway), at most ``max_nonces``;
    only OPENs already checked against the plan get here, so only planned nodes can fill it.
    """

    def __init__(self, window_s: float, max_nonces: int = 1 << 16, clock: Callable[[], float] = time.time):
        self.window_s, self.max_nonces = window_s, max_nonces
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # nonce -> clock time first seen

    def check(self, nonce: bytes, sent_unix_ms: int) -> None:
        """Refuse a stale or seen OPEN without recording anything: cheap enough to run before the
        signature is recovered, so a replay costs no cryptography."""
        skew = self._clock() - sent_unix_ms / 1000
        if abs(skew) > self.window_s:
            raise ProtocolError(f"OPEN was sent {skew:+.0f} s from this node's clock, outside its window of "
                                f"{self.window_s:.0f} s: a replay, or clocks that differ (sync them with NTP)")
        if nonce in self._seen:
            raise ProtocolError("OPEN replayed: its session nonce was already used; open with a fresh nonce")

    def admit(self, nonce: bytes, sent_unix_ms: int) -> None:
        """:meth:`check`, then remember ``nonce`` (call once the OPEN's signer is checked against the plan)."""
        self.check(nonce, sent_unix_ms)
        now = self._clock()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - 2 * self.window_s:
                self._seen.popitem(last=False)
            if nonce in self._seen:
                raise ProtocolError("OPEN replayed: its session nonce was already used; open with a fresh nonce")
            if len(self._seen) >= self.max_nonces:
                raise SessionError(f"too many sessions opened in the last {2 * self.window_s:.0f} s; retry later")
            self._seen[nonce] = now


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim  # glibc only
    except (OSError, AttributeError, TypeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def _trim(freed: int) -> None:
    """Hand freed heap memory back to the OS once much was freed: glibc keeps it otherwise, and
    the node's RSS stays high after large sessions close."""
    if freed >= TRIM_BYTES and _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
