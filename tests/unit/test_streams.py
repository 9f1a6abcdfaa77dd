"""The stream book: idle streams capped per peer and overall, ended when quiet, never while busy."""

from __future__ import annotations

from worker.streams import StreamBook


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _book(clock, **kw) -> tuple[StreamBook, list[str]]:
    ended: list[str] = []
    book = StreamBook(**{"max_idle": 4, "max_idle_per_peer": 2, "idle_s": 10, "live_s": 100, **kw}, clock=clock)
    book.ended = ended
    return book, ended


def _enter(book, ended, peer, name, alive=lambda: True):
    return book.enter(peer, lambda: ended.append(name), alive)


def test_a_peer_that_opens_many_idle_streams_only_evicts_its_own():
    clock = Clock()
    book, ended = _book(clock)
    _enter(book, ended, "honest", "h1")
    for i in range(5):
        _enter(book, ended, "flooder", f"f{i}")
    assert ended == ["f0", "f1", "f2"] and book.counts() == (0, 3)


def test_past_the_overall_cap_the_oldest_idle_stream_ends_and_live_streams_are_not_counted():
    clock = Clock()
    book, ended = _book(clock)
    live = _enter(book, ended, "a", "live")
    book.begin(live)
    book.done(live, live=True)
    for i, peer in enumerate("bbccd"):
        _enter(book, ended, peer, f"idle{i}")
    assert ended == ["idle0"] and book.counts() == (1, 4)


def test_quiet_streams_end_after_their_limit_but_not_while_a_message_runs():
    clock = Clock()
    book, ended = _book(clock)
    quiet = _enter(book, ended, "a", "quiet")
    busy = _enter(book, ended, "b", "busy")
    book.begin(busy)
    clock.t = 11
    assert book.sweep() == 1 and ended == ["quiet"]
    book.done(busy, live=False)
    clock.t = 22
    book.sweep()
    assert ended == ["quiet", "busy"]
    book.leave(quiet)
    book.leave(busy)
    assert book.counts() == (0, 0)


def test_a_live_stream_whose_session_ended_becomes_idle_and_is_capped():
    clock, open_ = Clock(), {"s": True}
    book, ended = _book(clock, max_idle_per_peer=1)
    e = _enter(book, ended, "a", "replaced", alive=lambda: open_["s"])
    book.begin(e)
    book.done(e, live=True)
    clock.t = 1
    _enter(book, ended, "a", "newer")
    open_["s"] = False  # its session was replaced by a newer OPEN
    book.sweep()
    assert ended == ["replaced"] and book.counts() == (0, 1)
