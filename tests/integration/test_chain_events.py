"""Event follower across restarts, WebSocket wake-ups, and concurrent sends from one key."""

from __future__ import annotations

import threading
import time

import pytest

from chain.testing import clients

pytestmark = pytest.mark.integration


def _follower(chain, cursor, ws_url=None):
    return chain.follower(cursor, names=["ModelRegistered"], ws_url=ws_url)


def test_follower_resumes_without_missing_or_repeating(deployed, tmp_path):
    cursor = tmp_path / "cursor.json"
    names = [f"model-{i}" for i in range(6)]
    for n in names[:4]:
        deployed.register_model(n, 2, 4096, b"\1" * 32)
    seen: list[str] = []

    class Crash(Exception):
        pass

    def crash_after_two(ev):
        if len(seen) == 2:
            raise Crash()  # the process dies while handling the third event
        seen.append(ev.args["name"])

    with pytest.raises(Crash):
        _follower(deployed, cursor).run_once(crash_after_two)
    for n in names[4:]:
        deployed.register_model(n, 2, 4096, b"\1" * 32)
    # a new process with the same cursor file
    assert _follower(deployed, cursor).run_once(lambda ev: seen.append(ev.args["name"])) == 4
    assert seen == names
    # nothing new: nothing delivered, and the cursor moved to the head
    assert _follower(deployed, cursor).run_once(lambda ev: seen.append(ev.args["name"])) == 0
    assert seen == names


def test_follower_wakes_on_new_heads_over_websocket(deployed, anvil_devnet, tmp_path):
    f = _follower(deployed, tmp_path / "c.json", ws_url=anvil_devnet.ws_url)
    got: list[float] = []
    stop = threading.Event()
    t = threading.Thread(target=f.follow, args=(lambda ev: got.append(time.monotonic()), stop, 30.0), daemon=True)
    t.start()
    try:
        time.sleep(1.0)  # first scan done, subscription up; now the follower sleeps up to 30 s
        sent = time.monotonic()
        deployed.register_model("late", 2, 4096, b"\1" * 32)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got and got[0] - sent < 10  # woken by the subscription, not the 30 s poll
    finally:
        stop.set()
        f._wake.set()
        t.join(timeout=5)


def test_concurrent_sends_from_one_key(deployed):
    (a,) = clients(deployed, 1)
    errors: list[BaseException] = []

    def send(i):
        try:
            a.register_model(f"concurrent-{i}", 1, 4096, b"\1" * 32)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # published by a, not the deployment's default publisher: named with its namespace
    assert all(a.get_model(f"{a.address}/concurrent-{i}").publisher == a.address for i in range(16))
