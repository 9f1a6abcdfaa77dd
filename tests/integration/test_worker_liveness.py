"""Silent and flooding peers against real worker processes on 127.0.0.1: a next hop that never
answers, streams opened and left idle, many honest sessions at once, an old stream ending after
its job was reopened, and a flood of idle streams and replayed OPENs during an honest job. Each
test is named after the finding it guards (the issue "Nodes hold up against silent, hostile and
failing peers")."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, StaticPlanView
from worker.ring import run_replica
from worker.ring.link import PeerTimeout
from worker.signing import Signer

sys.path.insert(0, str(Path(__file__).parent))
from peers import (  # noqa: E402
    KEYS,
    PROMPT,
    HeldStream,
    Pinger,
    Sender,
    free_port,
    head_stage,
    hidden,
    idle_streams,
    refusal,
    ring_workers,
    route,
    rss_bytes,
    stalled_peer,
    stub,
)
from test_worker_tiny import TinyLM  # noqa: E402

pytestmark = pytest.mark.integration
CAP = 32 << 20  # the workers' session memory cap, bytes
PARAMS = GenParams(max_tokens=8, codec=codec.FP32)


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """Hop 1 [2, 5) and the tail [5, 6) as worker processes with short timeouts; job 90 plans a
    next hop that never answers after hop 1, job 91 one after the head."""
    tmp = tmp_path_factory.mktemp("liveness")
    ports = [0, free_port(), free_port()]
    with stalled_peer() as silent:
        view = StaticPlanView([route(j, ports, PARAMS) for j in range(1, 40)])
        silent_ep = f"127.0.0.1:{silent}"
        view.add(route(90, ports, PARAMS, endpoints=["-", f"127.0.0.1:{ports[1]}", silent_ep]))
        view.add(route(91, ports, PARAMS, endpoints=["-", silent_ep, silent_ep]))
        with ring_workers(tmp, view, ports, "--hop-timeout-s", "2", "--session-ttl-s", "3", "--stream-idle-s", "2",
                          "--max-idle-streams", "32", "--max-idle-streams-per-peer", "16", "--session-max-bytes",
                          str(CAP)) as procs:
            yield {"view": view, "ports": ports, "procs": procs, "want": TinyLM().eval().greedy(PROMPT, 8),
                   "head": head_stage()}  # built once: TinyLM seeds torch's global generator


def _head(ring, job: int, timeout_s: float = 10.0) -> list[int]:
    return run_replica(ring["head"], ring["view"].route(JobId(job)), 0, PROMPT, Signer(KEYS[0]),
                       config=WorkerConfig(hop_timeout_s=timeout_s))


def _within(seconds: float, fn, *args):
    """(result or exception, seconds taken) of ``fn(*args)``; fails if it takes longer than ``seconds``."""
    out: list = []

    def run():
        t0 = time.monotonic()
        try:
            out.append(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)
        out.append(time.monotonic() - t0)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still waiting after {seconds} s"
    return out[0], out[1]


def test_finding1_a_next_hop_that_never_answers_is_given_up_within_hop_timeout(ring):
    """Regression: hop_timeout_s was read nowhere; a peer that accepts a stream and never answers
    hung the head's replica (and a daemon head thread) for good."""
    err, took = _within(20, _head, ring, 91, 1.0)  # the head's own next hop is silent
    assert isinstance(err, PeerTimeout) and "did not answer step 0 within 1 s" in str(err) and took < 5
    err, took = _within(20, _head, ring, 90)  # hop 1's next hop is silent: hop 1 gives up after 2 s
    assert isinstance(err, ProtocolError) and "did not answer" in str(err) and took < 8
    assert stub(ring["ports"][1]).Info(pb.InfoRequest(), timeout=2).sessions == 0  # its thread and session freed
    assert _head(ring, 1) == ring["want"]


def test_finding2_idle_streams_do_not_take_a_worker_offline(ring):
    """Regression: 16 Forward streams that sent nothing took every handler thread: Ping, Info and an
    honest job all hit DEADLINE_EXCEEDED."""
    tail = ring["ports"][2]
    with idle_streams(tail, 40):
        time.sleep(0.5)
        t0 = time.monotonic()
        stub(tail).Ping(pb.PingRequest(), timeout=2)
        stub(tail).Info(pb.InfoRequest(), timeout=2)
        assert time.monotonic() - t0 < 2
        assert _head(ring, 2) == ring["want"]


def test_finding2_twenty_honest_sessions_at_once_all_run_and_ping_keeps_answering(ring):
    """Regression: sessions 17-20 of 20 queued silently and Ping timed out (one thread per stream, 16)."""
    with Pinger(ring["ports"][2], every_s=0.1) as pings, ThreadPoolExecutor(20) as pool:
        outs = list(pool.map(lambda j: _head(ring, j, 30.0), range(10, 30)))
    assert outs == [ring["want"]] * 20
    assert pings.rtts and None not in pings.rtts and max(pings.rtts) < 1.0


def test_finding3_an_old_stream_ending_does_not_close_the_session_that_replaced_it(ring):
    """Regression: stream A's session expired, stream C reopened the job, A ended, and C's next step
    failed with "no open session"."""
    tail = ring["ports"][2]
    a = HeldStream(grpc.insecure_channel(f"127.0.0.1:{tail}"))
    assert a.send(Sender(30).open()).upstream
    time.sleep(3.6)  # A's session expires (TTL 3 s)
    c_peer = Sender(30)
    c = HeldStream(grpc.insecure_channel(f"127.0.0.1:{tail}"))
    assert c.send(c_peer.open()).upstream
    a.cancel()  # A ends
    time.sleep(0.3)
    assert len(c.send(c_peer.step(0, hidden(4))).ids) == 1
    assert len(c.send(c_peer.step(1, hidden(1))).ids) == 1
    c.send(c_peer.close(2))
    c.end()


def test_flood_of_idle_streams_and_replayed_opens_during_an_honest_job(ring):
    """200 idle streams and 200 replayed OPENs against one node while honest jobs run: the jobs
    complete, Ping answers throughout, and the node's memory stays under its cap."""
    tail, pid = ring["ports"][2], ring["procs"][1].pid
    rss0 = rss_bytes(pid)
    recorded = Sender(31).open()  # an honest OPEN of the job the flood targets, recorded off the wire
    assert list(stub(tail).Forward(iter([recorded])))[0].upstream
    stop = threading.Event()
    refused: list[grpc.StatusCode] = []

    def replay():
        while not stop.is_set() and len(refused) < 200:
            refused.append(refusal(tail, [recorded]).code())

    with Pinger(tail, every_s=0.1) as pings, idle_streams(tail, 200, channels=10), ThreadPoolExecutor(4) as pool:
        floods = [pool.submit(replay) for _ in range(4)]
        outs = [_head(ring, j, 30.0) for j in (31, 32, 33)]
        stop.set()
        for f in floods:
            f.result()
        info = stub(tail).Info(pb.InfoRequest(), timeout=2)
        rss = rss_bytes(pid)
    assert outs == [ring["want"]] * 3
    assert len(refused) >= 200 and set(refused) == {grpc.StatusCode.PERMISSION_DENIED}
    assert pings.rtts and None not in pings.rtts and max(pings.rtts) < 1.0, pings.rtts
    assert info.free_cache_bytes > 0 and rss < rss0 + CAP, (rss0, rss)
