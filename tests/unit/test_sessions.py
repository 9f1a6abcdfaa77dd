"""Session table: time-to-live, memory cap, table size."""

from __future__ import annotations

import pytest

from worker.sessions import SessionError, SessionTable


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_idle_sessions_expire_after_their_ttl_and_active_ones_do_not():
    clock = Clock()
    table = SessionTable(ttl_s=10, max_bytes=1000, max_sessions=8, clock=clock)
    table.open((1, 0))
    table.open((2, 0)).pipe = "b"
    clock.t = 8
    table.get((2, 0))  # touching a session keeps it alive
    clock.t = 12
    with pytest.raises(SessionError, match="expired"):
        table.get((1, 0))
    assert table.get((2, 0)).pipe == "b" and len(table) == 1


def test_memory_cap_refuses_new_sessions_and_closes_the_one_that_overflows():
    table = SessionTable(ttl_s=10, max_bytes=100, max_sessions=8, clock=Clock())
    a = table.open((1, 0))
    b = table.open((2, 0))
    table.account(a, 60)
    with pytest.raises(SessionError, match="cap"):
        table.account(b, 50)
    assert len(table) == 1 and table.used_bytes() == 60
    table.account(a, 100)
    with pytest.raises(SessionError, match="cap"):
        table.open((3, 0))
    table.close((1, 0))
    table.open((3, 0))  # memory freed by close


def test_table_size_and_duplicates_are_refused():
    table = SessionTable(ttl_s=10, max_bytes=100, max_sessions=2, clock=Clock())
    table.open((1, 0))
    with pytest.raises(SessionError, match="already open"):
        table.open((1, 0))
    table.open((1, 1))
    with pytest.raises(SessionError, match="full"):
        table.open((2, 0))


def test_closing_a_session_closes_its_pipeline():
    closed = []

    class Out:
        def close(self):
            closed.append(True)

    table = SessionTable(ttl_s=10, max_bytes=100, max_sessions=2, clock=Clock())
    table.open((1, 0)).pipe = Out()
    table.close_all()
    assert closed == [True] and len(table) == 0
