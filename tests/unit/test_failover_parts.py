"""Failover's pure parts: standbys in the router, routes a session may run, the head's choice."""

from __future__ import annotations

import time

import pytest

from proto.errors import ProtocolError
from proto.types import Hop, NodeId, Plan, Replica
from router.plan import plan_replicas
from router.standby import add_standbys
from router.types import NodeView, Snapshot
from worker.planview import HopRoute, JobRoute
from worker.ring.failover import standby_route


def _node(i: int, start: int, end: int, price: int = 10, alive: bool = True) -> NodeView:
    return NodeView(NodeId(f"0x{i:040x}"), f"127.0.0.1:{9000 + i}", "m", start, end, price_per_block=price,
                    alive=alive)


def test_router_plans_one_standby_per_span_after_the_head_node_disjoint_and_no_dearer():
    nodes = (_node(1, 0, 2), _node(2, 2, 4), _node(3, 0, 2), _node(4, 2, 4),  # two replicas' primaries
             _node(5, 2, 4), _node(6, 1, 4), _node(7, 2, 4, price=99), _node(8, 2, 4, alive=False))
    snap = Snapshot("m", 4, nodes)
    plan = add_standbys(plan_replicas(snap, 2).plan, snap)
    sb = [rep.standbys for rep in plan.replicas]
    assert [len(s) for s in sb] == [1, 1]  # the tail span of each replica; the head's span gets none
    assert all((s[0].start, s[0].end) == (2, 4) for s in sb)
    tails = {rep.hops[-1].node for rep in plan.replicas}
    spare = {n.node for n in (nodes[1], nodes[3], nodes[4], nodes[5])} - tails  # 7 asks more, 8 is dead
    assert {s[0].node for s in sb} == spare
    every = [h.node for rep in plan.replicas for h in (*rep.hops, *rep.standbys)]
    assert len(every) == len(set(every))  # node-disjoint, as JobPlan.check demands (validate ran too)


def test_router_adds_no_standby_without_a_spare_node():
    nodes = (_node(1, 0, 2), _node(2, 2, 4))
    snap = Snapshot("m", 4, nodes)
    plan = plan_replicas(snap, 1).plan
    assert add_standbys(plan, snap) == plan


A, B, B2, C, C2 = (HopRoute(NodeId(f"0x{i:040x}"), f"h{i}", s, e) for i, s, e in
                   ((1, 0, 1), (2, 1, 2), (3, 1, 2), (4, 2, 3), (5, 2, 3)))
ROUTE = JobRoute(7, "m", 3, ((A, B, C),), standbys=((B2, C2),))  # words: A B B2 C C2


def test_served_routes_follow_the_plan_words():
    assert ROUTE.primary_mask(0) == 0b01011
    assert ROUTE.served(0, 0).replicas[0] == (A, B, C)
    assert ROUTE.served(0, 0b01101).replicas[0] == (A, B2, C)
    assert ROUTE.served(0, 0b10101).replicas[0] == (A, B2, C2)
    assert ROUTE.served(0, 0b10101).mask_of(0) == 0b10101
    for bad in (0b00111, 0b00011, 0b11011, 0b101011, 0b00001):  # both, neither, past the words
        with pytest.raises(ProtocolError):
            ROUTE.served(0, bad)


def test_plan_words_are_the_contracts_packed_order():
    plan = Plan("m", 3, (Replica(tuple(Hop(h.node, h.start, h.end) for h in (A, B, C)),
                                 tuple(Hop(h.node, h.start, h.end) for h in (B2, C2))),))
    assert [(h.node, sb) for h, sb in plan.replicas[0].words()] == [(h.node, sb) for h, sb in ROUTE.plan_words(0)]


def test_the_head_fails_over_to_the_standby_of_the_failed_hop_once():
    assert standby_route(ROUTE.served(0, 0), 0, 1) == 0b01101  # B failed -> B2
    assert standby_route(ROUTE.served(0, 0), 0, 2) == 0b10011  # C failed -> C2
    assert standby_route(ROUTE.served(0, 0b01101), 0, 2) == 0b10101  # then C too -> C2
    assert standby_route(ROUTE.served(0, 0b01101), 0, 1) is None  # the standby itself failed: nothing left
    no_standby = JobRoute(8, "m", 3, ((A, B, C),))
    assert standby_route(no_standby, 0, 1) is None


def test_a_hop_accepts_the_standby_its_route_names_and_the_replayed_steps_reach_the_commit():
    """A session after a failover: OPEN at step 0 on the route with hop 1's standby, the steps
    replayed from the start; the tail's output reaches the commit with that route."""
    import os

    import torch

    from proto.tessera.v1 import worker_pb2 as pb
    from proto.types import decode_output
    from tests.unit.test_signing import ADDR, DOMAIN, KEYS, LinearTail
    from worker import codec
    from worker.config import WorkerConfig
    from worker.planview import GenParams, StaticPlanView
    from worker.ring import HopRuntime, Stream
    from worker.ring.link import message
    from worker.signing import Signer

    hops = tuple(HopRoute(NodeId(ADDR[i]), "-", s, e) for i, s, e in ((0, 0, 1), (1, 1, 2), (2, 2, 4)))
    route = JobRoute(7, "toy", 4, (hops,), GenParams(max_tokens=2, codec=codec.FP32),
                     standbys=((HopRoute(NodeId(ADDR[3]), "-", 1, 2),),))  # words: 0 1 3 2
    outputs = []
    tail = HopRuntime(WorkerConfig(), LinearTail(), StaticPlanView([route]), Signer(KEYS[2]),
                      on_output=lambda *a: outputs.append(a))
    standby, session = Signer(KEYS[3]), os.urandom(32)

    def opened(route_mask, signer=standby):
        return signer.sign(message(7, 0, 1, 0, pb.KIND_OPEN, session=session,
                                   sent_unix_ms=time.time_ns() // 10**6, route=route_mask), DOMAIN)

    with pytest.raises(ProtocolError, match="plan names"):  # the primaries' route: the standby is no one there
        tail.handle(opened(0b1011), Stream())
    with pytest.raises(ProtocolError, match="exactly one"):  # a route the plan does not allow
        tail.handle(opened(0b1111), Stream())
    stream = Stream()
    assert tail.handle(opened(0b1101), stream).kind == pb.KIND_OPEN
    x = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(1))  # the prompt, replayed from step 0
    first = tail.handle(standby.sign(message(7, 0, 1, 0, pb.KIND_STEP, payload=codec.encode(x, codec.FP32),
                                             session=session), DOMAIN), stream)
    last = tail.handle(standby.sign(message(7, 0, 1, 1, pb.KIND_STEP, session=session,
                                            payload=codec.encode(x[:, :1], codec.FP32)), DOMAIN), stream)
    assert decode_output(last.output) == [*first.ids, *last.ids]
    assert outputs == []  # delivered with the receipts, on CLOSE
    assert last.output and route.served(0, 0b1101).replicas[0][1].node == ADDR[3]


def test_an_open_starts_at_step_0():
    from proto.tessera.v1 import worker_pb2 as pb
    from worker.ring.link import message
    from worker.wire import MessageError, check_request

    bad = message(7, 0, 0, 2, pb.KIND_OPEN, session=b"\1" * 32)
    bad.sender, bad.signature = "0x" + "00" * 20, b"\0" * 65
    with pytest.raises(MessageError, match="OPEN must carry step 0"):
        check_request(bad, 1 << 20)
    bad = message(7, 0, 0, 0, pb.KIND_OPEN, ids=(1, 2), session=b"\1" * 32)
    bad.sender, bad.signature = "0x" + "00" * 20, b"\0" * 65
    with pytest.raises(MessageError, match="belong to answers"):
        check_request(bad, 1 << 20)
