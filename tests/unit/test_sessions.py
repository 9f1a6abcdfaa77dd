"""Session table: time-to-live, job deadlines, memory reserved before a step, table size, replays."""

from __future__ import annotations

import pytest

from proto.errors import ProtocolError
from worker.sessions import OpenGuard, SessionError, SessionTable


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Pipe:
    def __init__(self, log=None, name=""):
        self.log, self.name = log if log is not None else [], name

    def close(self):
        self.log.append(self.name)


def _step(table, s):
    table.begin(s)
    table.end(s)


def test_idle_sessions_expire_after_their_ttl_and_active_ones_do_not():
    clock = Clock()
    table = SessionTable(ttl_s=10, max_bytes=1000, max_sessions=8, clock=clock)
    a = table.open((1, 0))
    b = table.open((2, 0))
    clock.t = 8
    _step(table, b)  # a message keeps a session alive
    clock.t = 12
    assert table.expire() == 1
    with pytest.raises(SessionError, match="expired"):
        table.begin(a)
    table.begin(b)
    assert len(table) == 1


def test_finding4_a_session_never_expires_while_its_own_step_runs():
    """Regression (finding 4): a 78 s prefill under a 20 s TTL was answered, and the next step refused."""
    clock = Clock()
    table = SessionTable(ttl_s=20, max_bytes=1000, max_sessions=8, clock=clock)
    s = table.open((1, 0))
    table.begin(s)
    clock.t = 78  # the step computes
    assert table.expire() == 0
    table.end(s)
    clock.t = 90
    table.begin(s)  # the next step: idle for 12 s only
    table.end(s)


def test_a_session_ends_at_its_jobs_deadline():
    clock = Clock()
    table = SessionTable(ttl_s=100, max_bytes=1000, max_sessions=8, clock=clock)
    s = table.open((1, 0), expires_at=30)
    clock.t = 31
    with pytest.raises(SessionError, match="deadline"):
        table.begin(s)
    with pytest.raises(SessionError, match="deadline"):
        table.open((2, 0), expires_at=30)


def test_finding3_a_stream_that_ends_closes_only_its_own_session():
    """Regression (finding 3): stream A's session expired, stream C reopened the job, A ended, and
    C's next step failed with "no open session"."""
    clock, closed = Clock(), []
    table = SessionTable(ttl_s=10, max_bytes=1000, max_sessions=8, clock=clock)
    a = table.open((1, 0), b"a")
    a.pipe = Pipe(closed, "a")
    clock.t = 11
    c = table.open((1, 0), b"c")  # A expired meanwhile
    c.pipe = Pipe(closed, "c")
    assert table.close(a) is False  # A's stream ends
    _step(table, c)
    assert closed == ["a"]


def test_a_new_open_replaces_the_session_of_its_key():
    """Whoever opened a job/replica first does not keep it: the planned predecessor's fresh OPEN wins."""
    closed = []
    table = SessionTable(ttl_s=10, max_bytes=1000, max_sessions=8, clock=Clock())
    old = table.open((1, 0), b"old")
    old.pipe = Pipe(closed, "old")
    new = table.open((1, 0), b"new")
    assert closed == ["old"] and len(table) == 1
    with pytest.raises(SessionError, match="replaced"):
        table.begin(old)
    _step(table, new)


def test_a_session_replaced_while_its_step_runs_is_closed_when_the_step_ends():
    closed = []
    table = SessionTable(ttl_s=10, max_bytes=1000, max_sessions=8, clock=Clock())
    old = table.open((1, 0), b"old")
    old.pipe = Pipe(closed, "old")
    table.begin(old)
    table.open((1, 0), b"new")
    assert closed == []  # not under a running step
    table.end(old)
    assert closed == ["old"]


def test_finding14_memory_is_reserved_before_a_step_runs():
    """Regression (finding 14): at the cap each new session still ran its whole prefill before it was
    dropped. The step's memory is reserved first; a step that does not fit is refused before it runs."""
    table = SessionTable(ttl_s=10, max_bytes=100, max_sessions=8, clock=Clock())
    a = table.open((1, 0))
    b = table.open((2, 0))
    table.begin(a)
    table.reserve(a, 70)
    assert table.used_bytes() == 70
    table.begin(b)
    with pytest.raises(SessionError, match="needs about 40 bytes"):
        table.reserve(b, 40)
    table.end(b)
    assert len(table) == 1  # b was closed before it computed anything
    table.end(a, held_bytes=60)  # the reservation is released; what the session holds stays charged
    assert table.used_bytes() == 60
    table.begin(a)
    table.reserve(a, 100)  # a's own holding is counted once
    table.end(a, held_bytes=100)
    with pytest.raises(SessionError, match="cap"):
        table.open((3, 0))


def test_table_size_is_bounded():
    table = SessionTable(ttl_s=10, max_bytes=100, max_sessions=2, clock=Clock())
    table.open((1, 0))
    table.open((1, 1))
    with pytest.raises(SessionError, match="full"):
        table.open((2, 0))


def test_closing_every_session_closes_its_pipeline():
    closed = []
    table = SessionTable(ttl_s=10, max_bytes=100, max_sessions=2, clock=Clock())
    table.open((1, 0)).pipe = Pipe(closed, "x")
    table.close_all()
    assert closed == ["x"] and len(table) == 0


def test_finding7_stale_and_replayed_opens_are_refused():
    """Regression (findings 5, 7): a recorded OPEN replayed later, on any stream, opens nothing."""
    clock = Clock()
    clock.t = 1000.0
    guard = OpenGuard(window_s=60, max_nonces=3, clock=clock)
    guard.admit(b"n1", 1_000_000)
    with pytest.raises(ProtocolError, match="replayed"):
        guard.admit(b"n1", 1_000_000)
    with pytest.raises(ProtocolError, match="outside its window"):
        guard.admit(b"n2", 900_000)
    guard.admit(b"n2", 1_000_500)
    guard.admit(b"n3", 1_001_000)
    with pytest.raises(SessionError, match="too many"):
        guard.admit(b"n4", 1_001_000)
    clock.t = 1121.0  # n1..n3 are older than twice the window: forgotten, and stale if replayed
    guard.admit(b"n4", 1_121_000)
    with pytest.raises(ProtocolError, match="outside its window"):
        guard.admit(b"n1", 1_000_000)
