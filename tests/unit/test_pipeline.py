"""A node's step (worker.ring.pipeline): nothing computed from an unverified message leaves the node,
under both overlap policies (no network: the next hop answers through an in-process stub)."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from eth_account import Account

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId, NodeId
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, HopRoute, JobRoute
from worker.ring.link import Link, message
from worker.ring.pipeline import Pipeline
from worker.signing import PendingCheck, Signer
from worker.stage import StageSpec
from worker.wire import ZERO_ADDRESS, domain_separator

KEYS = ["0x" + f"{i + 21:064x}" for i in range(4)]  # hops 0, 1, 2 and a stranger
ADDR = [Account.from_key(k).address for k in KEYS]
ROUTE = JobRoute(JobId(7), "toy", 3, ((HopRoute(NodeId(ADDR[0]), "h0", 0, 1), HopRoute(NodeId(ADDR[1]), "h1", 1, 2),
                                       HopRoute(NodeId(ADDR[2]), "h2", 2, 3)),),
                 GenParams(max_tokens=4, codec=codec.FP32))
DOMAIN = domain_separator(0, ZERO_ADDRESS)  # JobRoute's default


class Toy:
    spec = StageSpec("toy", 3, 0, 1, "causal-lm")
    device, dtype = torch.device("cpu"), torch.float32

    def new_cache(self):
        return None

    def cache_bytes(self, cache):
        return 0

    def forward(self, x, cache=None, *, last=False):
        return torch.ones(1, x.shape[1], 4)


class NextHop:
    """Channels whose stub answers every request in process, signed by ``key`` for steps."""

    def __init__(self, pos: int, step_key: str):
        self.pos, self.step_key, self.sent = pos, step_key, []

    def stub(self, endpoint):
        return self

    def Forward(self, requests, timeout=None):
        for m in requests:
            self.sent.append((m.kind, m.step))
            key = self.step_key if m.kind == pb.KIND_STEP else KEYS[self.pos + 1]
            yield Signer(key).sign(message(7, 0, self.pos + 1, m.step, m.kind, upstream=True,
                                           ids=[5] if m.kind == pb.KIND_STEP else (), session=m.session), DOMAIN)


def _pipe(pos: int, answers: NextHop, defer: bool) -> Pipeline:
    pipe = Pipeline(ROUTE, 0, pos, Toy(), Signer(KEYS[pos]), WorkerConfig(), answers, defer_answer_check=defer)
    pipe.open()
    return pipe


def test_the_head_checks_an_answer_while_its_next_step_runs_and_sends_nothing_from_a_forged_one():
    honest = _pipe(0, NextHop(0, KEYS[1]), defer=True)
    assert [list(honest.step(torch.tensor([[3]]), t)[0]) for t in range(2)] == [[5], [5]]
    honest.finish(2)

    forged = NextHop(0, KEYS[3])
    pipe = _pipe(0, forged, defer=True)
    assert list(pipe.step(torch.tensor([[3]]), 0)[0]) == [5]  # not checked yet: its check overlaps step 1
    with pytest.raises(ProtocolError, match="plan names"):
        pipe.step(torch.tensor([[5]]), 1)
    assert forged.sent == [(pb.KIND_OPEN, 0), (pb.KIND_STEP, 0)]  # step 1 never left

    forged = NextHop(0, KEYS[3])
    pipe = _pipe(0, forged, defer=True)
    pipe.step(torch.tensor([[3]]), 0)
    with pytest.raises(ProtocolError, match="plan names"):
        pipe.finish(1)  # the last answer is checked before the head may return its ids
    assert forged.sent == [(pb.KIND_OPEN, 0), (pb.KIND_STEP, 0)]


def test_a_hop_checks_an_answer_on_arrival_since_it_relays_it_at_once():
    pipe = _pipe(1, NextHop(1, KEYS[3]), defer=False)
    with pytest.raises(ProtocolError, match="plan names"):
        pipe.step(torch.zeros(1, 1, 4), 0)


@pytest.mark.parametrize("defer", [False, True])
def test_a_forged_input_yields_no_output_and_sends_nothing(defer):
    nxt = NextHop(1, KEYS[2])
    pipe = _pipe(1, nxt, defer=defer)
    x = torch.zeros(1, 1, 4)
    incoming = Signer(KEYS[3]).sign(message(7, 0, 0, 0, pb.KIND_STEP, payload=codec.encode(x, codec.FP32)), DOMAIN)
    with pytest.raises(ProtocolError, match="plan names"):
        pipe.forward(x, 0, PendingCheck(incoming, ADDR[0], DOMAIN))
    assert nxt.sent == [(pb.KIND_OPEN, 0)]


def test_the_tail_stops_at_any_end_of_sequence_id_of_the_generation_config(tmp_path):
    """Finding 17: only the first of config.json's end-of-sequence ids was used, while transformers'
    generate (the reference every replica is checked against) stops at any id of generation_config."""
    import json

    from worker.node.payload import eos_token_ids
    from worker.ring.pipeline import tail_choose

    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 9]}))
    eos = eos_token_ids(tmp_path)
    assert eos == (2, 9)
    route = JobRoute(JobId(7), "toy", 3, ROUTE.replicas, GenParams(max_tokens=8, codec=codec.FP32, eos_token_ids=eos))
    logits = torch.zeros(1, 1, 16)
    for tok, done in ((9, True), (2, True), (5, False)):
        logits.zero_()
        logits[0, -1, tok] = 1.0
        assert tail_choose(route, logits, 3, [5, 5, 5]) == ([tok], done)


class _PeerThatNeverEnds:
    """A next hop's response stream that never ends by itself (a peer that keeps the stream open)."""

    def __init__(self):
        self.cancelled = threading.Event()

    def Forward(self, requests, timeout=None):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        self.cancelled.wait(3)
        raise StopIteration

    def cancel(self):
        self.cancelled.set()


def test_a_link_whose_close_was_answered_ends_its_stream_without_waiting_for_the_peer():
    """After an answered CLOSE nothing more can come: the stream is cancelled at once instead of waiting
    a trip through the ring for the next hop to end it (what made a CLOSE cost two ring trips)."""
    peer = _PeerThatNeverEnds()
    link = Link(peer, "0x" + "00" * 20, timeout_s=2, domain=b"\0" * 32)
    t0 = time.perf_counter()
    link.close(wait=False)
    assert peer.cancelled.is_set() and time.perf_counter() - t0 < 1
    peer = _PeerThatNeverEnds()
    link = Link(peer, "0x" + "00" * 20, timeout_s=2, domain=b"\0" * 32)
    t0 = time.perf_counter()
    link.close()  # a session that did not finish: wait (bounded) for the peer to end the stream
    assert time.perf_counter() - t0 >= 1.5
