"""Token streaming over real gRPC on loopback: the head's hub publishes signed events,
:func:`tessera.tokens.stream_tokens` follows the replicas of a plan and shows the first
one to produce, and refuses events that the plan's head did not sign."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from eth_account import Account

from proto.errors import ProtocolError
from proto.types import Hop, NodeId, Plan, Replica
from tessera.tokens import stream_tokens
from worker import stream

pytestmark = pytest.mark.integration

KEYS = ["0x" + f"{i:064x}" for i in (11, 12, 13)]


@pytest.fixture
def heads():
    """Two gRPC servers, each a head with its own hub and key."""
    running = []
    for key in KEYS[:2]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        hub = stream.add_to_server(server, max_subscribers=2)
        hub.signer = stream.TokenSigner(key)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        running.append((server, hub, f"127.0.0.1:{port}", hub.signer.address))
    yield running
    for server, *_ in running:
        server.stop(0).wait()


def _plan(*nodes: str) -> Plan:
    return Plan("m", 2, tuple(Replica((Hop(NodeId(n), 0, 2),)) for n in nodes))


def _publish(hub, job, replica, tokens, delay_s):
    def run():
        hub.begin(job, replica)
        for t in tokens:
            time.sleep(delay_s)
            hub.publish(job, replica, [t])
        hub.finish(job, replica)

    threading.Thread(target=run, daemon=True).start()


def test_first_replica_to_produce_is_shown_in_order(heads):
    (_, slow, ep0, a0), (_, fast, ep1, a1) = heads
    plan = _plan(a0, a1)
    _publish(slow, 7, 0, [1, 2, 3, 4], 0.5)
    _publish(fast, 7, 1, [5, 6, 7, 8], 0.02)
    chunks = list(stream_tokens(plan, 7, {a0: ep0, a1: ep1}, wait_s=20))
    assert [i for c in chunks for i in c.ids] == [5, 6, 7, 8]
    assert {c.replica for c in chunks} == {1} and {c.node for c in chunks} == {a1}


def test_late_subscriber_gets_the_whole_replay(heads):
    (_, hub, ep, addr), _ = heads
    hub.begin(9, 0)
    for t in (3, 1, 4):
        hub.publish(9, 0, [t])
    hub.finish(9, 0)
    assert [i for c in stream_tokens(_plan(addr), 9, {addr: ep}, wait_s=10) for i in c.ids] == [3, 1, 4]


def test_retry_voids_what_was_shown(heads):
    (_, hub, ep, addr), _ = heads
    hub.begin(5, 0)
    hub.publish(5, 0, [1])
    hub.finish(5, 0, "attempt 1 failed: next hop unreachable")
    hub.begin(5, 0)
    hub.publish(5, 0, [2])
    hub.finish(5, 0)
    chunks = list(stream_tokens(_plan(addr), 5, {addr: ep}, wait_s=10))
    assert [c.ids for c in chunks] == [(1,), (2,)] and chunks[1].restart


def test_events_not_signed_by_the_planned_head_are_refused(heads):
    (_, hub, ep, _addr), _ = heads
    impostor = Account.from_key(KEYS[2]).address
    _publish(hub, 3, 0, [1, 2], 0.01)
    assert list(stream_tokens(_plan(impostor), 3, {impostor: ep}, wait_s=5)) == []


def test_an_edited_event_fails_its_signature():
    ev = stream.TokenSigner(KEYS[0]).event(1, 0, 1, 0, [42])
    assert stream.recover(ev) == Account.from_key(KEYS[0]).address
    ev.ids[0] = 43
    with pytest.raises(ProtocolError):
        stream.recover(ev)
