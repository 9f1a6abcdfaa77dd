"""Routing is exact: plans are valid and cost what a brute-force search finds."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto.errors import ConfigError, RoutingError
from router import cost as costmod
from router.plan import plan_replicas
from router.types import Mode, NodeView, Snapshot, Weights

MODEL = "m"


def node(j: int, start: int, end: int, **kw) -> NodeView:
    return NodeView(node=f"0x{j:040x}", endpoint=f"127.0.0.1:{9000 + j}", model=MODEL, start=start, end=end, **kw)


@st.composite
def networks(draw, max_nodes: int = 6, max_blocks: int = 5):
    nb = draw(st.integers(1, max_blocks))
    n = draw(st.integers(1, max_nodes))
    nodes = []
    for j in range(n):
        s = draw(st.integers(0, nb - 1))
        e = draw(st.integers(s + 1, nb))
        nodes.append(
            node(
                j, s, e,
                throughput=draw(st.sampled_from([5.0, 20.0, 50.0, 200.0, 1000.0])),
                latency_ms=draw(st.floats(0.5, 200.0)),
                bandwidth=draw(st.floats(1e5, 1e8)),
                price_per_block=draw(st.integers(0, 5)) * 10**8,
                stake_wei=draw(st.integers(0, 5)) * 10**18,
                reputation=draw(st.sampled_from([0.1, 0.5, 1.0, 2.0, 10.0])),
            )
        )
    return Snapshot(model=MODEL, num_blocks=nb, nodes=tuple(nodes), bytes_per_token=2048.0)


weights_st = st.builds(
    Weights, price=st.sampled_from([0.0, 1.0, 30.0]), stake=st.sampled_from([0.0, 5.0]),
    reputation=st.sampled_from([0.0, 5.0]),
)


def all_chains(cm: costmod.CostModel) -> list[list[tuple[int, int, int]]]:
    """Every replica (each node at most once) over the model's blocks."""
    nb, out = cm.num_blocks, []

    def grow(k: int, used: frozenset, hops: list):
        if k == nb:
            out.append(list(hops))
            return
        for i, n in enumerate(cm.nodes):
            if i in used or not (n.start <= k < n.end):
                continue
            for b in range(k + 1, n.end + 1):
                grow(b, used | {i}, hops + [(i, k, b)])

    grow(0, frozenset(), [])
    return out


def brute(cm: costmod.CostModel, replicas: int, mode: Mode):
    """Best (key, plan) over all sets of node-disjoint chains; None if none."""
    chains = all_chains(cm)
    best = None

    def key(plan):
        obj = sum(cm.replica_cost(c).objective for c in plan)
        if mode is Mode.THROUGHPUT:
            return (-min(cm.replica_cost(c).bottleneck_tps for c in plan), obj)
        return (0.0, obj)

    def rec(start: int, chosen: list, used: frozenset):
        nonlocal best
        if len(chosen) == replicas:
            k = key(chosen)
            if best is None or k < best:
                best = k
            return
        for j in range(start, len(chains)):
            nodes = {h[0] for h in chains[j]}
            if not nodes & used:
                rec(j + 1, chosen + [chains[j]], used | nodes)

    rec(0, [], frozenset())
    return best


def check_valid(snapshot: Snapshot, rp) -> None:
    rp.plan.validate()
    by = {n.node: n for n in snapshot.nodes}
    for rep in rp.plan.replicas:
        ids = [h.node for h in rep.hops]
        assert len(ids) == len(set(ids)), "a node appears twice in one replica"
        for h in rep.hops:
            assert by[h.node].start <= h.start < h.end <= by[h.node].end, "hop outside the registered span"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snap=networks(), replicas=st.integers(1, 3), mode=st.sampled_from(list(Mode)), w=weights_st)
def test_plan_is_valid_and_matches_brute_force(snap, replicas, mode, w):
    cm = costmod.build(snap, mode, w)
    best = brute(cm, replicas, mode)
    if best is None:
        with pytest.raises(RoutingError):
            plan_replicas(snap, replicas, mode, w)
        return
    rp = plan_replicas(snap, replicas, mode, w, widest_max_nodes=5000)  # exactness, not the speed budget
    check_valid(snap, rp)
    assert len(rp.plan.replicas) == replicas
    assert rp.optimal
    assert math.isclose(rp.objective, best[1], rel_tol=1e-7, abs_tol=1e-7)
    if mode is Mode.THROUGHPUT:
        assert math.isclose(min(c.bottleneck_tps for c in rp.costs), -best[0], rel_tol=1e-9)


@pytest.mark.parametrize(
    "replicas,spans",
    [
        # the relaxation splits node 0 across the two replicas
        (2, [(0, 2, 1000.0, 10.0), (1, 3, 200.0, 100.0), (0, 3, 20.0, 10.0)]),
        # the relaxation uses slow node 0 twice in one replica, around fast node 1
        (1, [(0, 4, 5.0, 100.0), (2, 3, 1000.0, 10.0), (2, 3, 200.0, 100.0)]),
    ],
)
def test_a_node_is_used_at_most_once(replicas, spans):
    nodes = tuple(node(j, s, e, throughput=t, latency_ms=l) for j, (s, e, t, l) in enumerate(spans))
    snap = Snapshot(model=MODEL, num_blocks=max(e for _, e, _, _ in spans), nodes=nodes)
    rp = plan_replicas(snap, replicas, Mode.LATENCY)
    check_valid(snap, rp)
    cm = costmod.build(snap, Mode.LATENCY, Weights())
    assert math.isclose(rp.objective, brute(cm, replicas, Mode.LATENCY)[1], rel_tol=1e-9)


def test_insufficient_disjoint_chains_names_count_and_blocks():
    nodes = (node(0, 0, 3), node(1, 0, 3), node(2, 3, 6), node(3, 3, 6), node(4, 0, 6))
    snap = Snapshot(model=MODEL, num_blocks=6, nodes=nodes)
    assert len(plan_replicas(snap, 3).plan.replicas) == 3
    with pytest.raises(RoutingError) as err:
        plan_replicas(snap, 4)
    msg = str(err.value)
    assert "only 3 node-disjoint replica(s) exist, 4 requested" in msg
    assert "[0, 6)" in msg


def test_short_blocks_are_listed():
    nodes = (node(0, 0, 2), node(1, 0, 2), node(2, 2, 4), node(3, 0, 3))
    snap = Snapshot(model=MODEL, num_blocks=4, nodes=nodes)
    with pytest.raises(RoutingError) as err:
        plan_replicas(snap, 2)
    assert "only 1 node-disjoint" in str(err.value)
    assert "[3, 4)" in str(err.value) and "[0, " not in str(err.value)


def test_dead_and_foreign_nodes_are_not_used():
    nodes = (
        node(0, 0, 2, throughput=1e6, alive=False),
        NodeView(node="0x" + "f" * 40, endpoint="x", model="other", start=0, end=2, throughput=1e6),
        node(2, 0, 2, throughput=10.0),
    )
    rp = plan_replicas(Snapshot(model=MODEL, num_blocks=2, nodes=nodes), 1)
    assert [h.node for h in rp.plan.replicas[0].hops] == [nodes[2].node]
    with pytest.raises(RoutingError, match="only 1 node-disjoint"):
        plan_replicas(Snapshot(model=MODEL, num_blocks=2, nodes=nodes), 2)


def test_modes_pick_what_they_promise():
    fast_dear = node(0, 0, 4, throughput=1000.0, latency_ms=2.0, price_per_block=10**9)
    slow_cheap = node(1, 0, 4, throughput=20.0, latency_ms=2.0, price_per_block=0)
    # two half-span nodes: each hop runs at 1000/2 tokens/s, widest but more hops
    wide_a = node(2, 0, 2, throughput=1000.0, latency_ms=80.0, price_per_block=10**8)
    wide_b = node(3, 2, 4, throughput=1000.0, latency_ms=80.0, price_per_block=10**8)
    snap = Snapshot(model=MODEL, num_blocks=4, nodes=(fast_dear, slow_cheap, wide_a, wide_b))
    first = lambda rp: [h.node for h in rp.plan.replicas[0].hops]  # noqa: E731
    assert first(plan_replicas(snap, 1, Mode.LATENCY)) == [fast_dear.node]
    assert first(plan_replicas(snap, 1, Mode.PRICE)) == [slow_cheap.node]
    lat_plan, wide_plan = plan_replicas(snap, 1, Mode.LATENCY), plan_replicas(snap, 1, Mode.THROUGHPUT)
    assert lat_plan.costs[0].bottleneck_tps == 250.0  # fast_dear alone: 1000 / 4 blocks
    assert wide_plan.costs[0].bottleneck_tps == 500.0  # no hop serves more than 2 blocks
    assert len(first(wide_plan)) == 2
    # a requester who values price enough leaves the fast, dear node
    assert first(plan_replicas(snap, 1, Mode.LATENCY, Weights(price=1000.0))) != [fast_dear.node]


def test_trust_weights_avoid_low_reputation():
    shady = node(0, 0, 2, throughput=1000.0, latency_ms=1.0, reputation=0.1, stake_wei=10**18)
    solid = node(1, 0, 2, throughput=500.0, latency_ms=1.0, reputation=5.0, stake_wei=10**18)
    snap = Snapshot(model=MODEL, num_blocks=2, nodes=(shady, solid))
    assert plan_replicas(snap, 1).plan.replicas[0].hops[0].node == shady.node
    rp = plan_replicas(snap, 1, Mode.LATENCY, Weights(reputation=5.0))
    assert rp.plan.replicas[0].hops[0].node == solid.node


def test_predicted_latency_adds_up():
    a = node(0, 0, 3, throughput=100.0, latency_ms=10.0, bandwidth=1e6)
    b = node(1, 3, 5, throughput=50.0, latency_ms=30.0, bandwidth=1e6)
    snap = Snapshot(model=MODEL, num_blocks=5, nodes=(a, b), bytes_per_token=1000.0, requester_latency_ms={a.node: 4.0, b.node: 6.0})
    rp = plan_replicas(snap, 1)
    # requester->a 2 + 3 blocks*10 + a->b (5 + 15) + transfer 1 ms + 2 blocks*20 + b->requester 3
    assert math.isclose(rp.costs[0].latency_ms, 2 + 30 + 20 + 1 + 40 + 3, rel_tol=1e-9)
    assert rp.costs[0].bottleneck_tps == 25.0


def test_bad_input_is_a_clear_error():
    snap = Snapshot(model=MODEL, num_blocks=2, nodes=(node(0, 0, 2),))
    with pytest.raises(RoutingError, match="at least 1"):
        plan_replicas(snap, 0)
    with pytest.raises(Exception, match="choose one of"):
        plan_replicas(snap, 1, "fastest")
    with pytest.raises(ConfigError, match="must be a finite number >= 0"):
        Weights(price=-1.0)
    with pytest.raises(ConfigError, match="bad weight"):
        Weights.parse("price=1,latency=2")
    assert Weights.parse("price=1, stake=0.5,reputation=2") == Weights(1.0, 0.5, 2.0)
    with pytest.raises(RoutingError, match="no alive node"):
        plan_replicas(Snapshot(model="nope", num_blocks=2, nodes=snap.nodes), 1)


def test_a_fresh_node_without_advertised_speed_is_still_planned():
    """A node registered without --throughput (and not yet measured) is usable, at an assumed speed."""
    fresh = node(0, 0, 4, throughput=0.0, latency_ms=1.0)
    rp = plan_replicas(Snapshot(model=MODEL, num_blocks=4, nodes=(fresh,)), 1)
    assert [h.node for h in rp.plan.replicas[0].hops] == [fresh.node]
    fast = node(1, 0, 4, throughput=10 * costmod.UNKNOWN_THROUGHPUT, latency_ms=1.0)
    rp = plan_replicas(Snapshot(model=MODEL, num_blocks=4, nodes=(fresh, fast)), 1)
    assert rp.plan.replicas[0].hops[0].node == fast.node  # a measured fast node beats the assumption
