"""A node's step (worker.ring.pipeline): nothing computed from an unverified message leaves the node,
under both overlap policies (no network: the next hop answers through an in-process stub)."""

from __future__ import annotations

import pytest
import torch
from eth_account import Account

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId, NodeId
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, HopRoute, JobRoute
from worker.ring.link import message
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
