"""Python's plan rules are the contract's: the same random plans, the same verdicts, on a real anvil.

Every example is judged by ``Plan.validate`` / ``check_hops`` and by a dry run
(``eth_call``) of ``JobMarket.submitJob``; both must accept, or both must refuse
with the same Solidity error name and arguments. Plans carry standbys (matching a
primary's span or not) and, now and then, junk in the unused top bits of a hop.
"""

from __future__ import annotations

import itertools

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.client import TesseraChain
from chain.devnet import dev_key
from chain.testing import deploy_fresh
from chain.tx import call_or_raise
from proto.errors import ContractError, PlanError
from proto.types import MAX_REPLICAS, STANDBY_BIT, Hop, NodeId, Plan, Replica, check_hops, pack_plan

pytestmark = pytest.mark.integration

N = 6  # blocks of the model: small, so random spans often touch its end
POOL = 24  # registered nodes, each serving [0, N): checkHops passes every shape-valid plan
PARAMS = (b"x", b"\0" * 32, "", 1, 0, 0, 4, 100, 100, 0)  # a valid JobParams
REPLICA_SHIFT = 192


@pytest.fixture(scope="module")
def net(anvil, anvil_w3):
    """A fresh deployment with model "m" of N blocks and POOL nodes serving all of it."""
    chain = deploy_fresh(anvil_w3, anvil)
    chain.register_model("m", N, 4096, b"\x01" * 32)
    nodes = []
    for i in range(POOL):  # dev keys past anvil's funded 12, funded here
        acct = Account.from_key(dev_key(40 + i))
        anvil_w3.provider.make_request("anvil_setBalance", [acct.address, hex(10**21)])
        TesseraChain(anvil_w3, chain.deployment, acct).register_node("m", 0, N, f"h:{i}", 10**18)
        nodes.append(acct.address)
    return chain, nodes


@st.composite
def spans(draw, max_hops: int, clean: bool) -> list[tuple[int, int]]:
    """A replica's spans: a cover of [0, N); unless clean, maybe with one end moved, or anything."""
    if clean or draw(st.booleans()):
        cuts = sorted(draw(st.sets(st.integers(1, N - 1), max_size=max_hops - 1)))
        bounds = [0, *cuts, N]
        out = list(itertools.pairwise(bounds))
        if not clean:
            k, which, v = draw(st.integers(0, len(out) - 1)), draw(st.integers(0, 1)), draw(st.integers(0, N + 2))
            out[k] = (v, out[k][1]) if which == 0 else (out[k][0], v)
        return out
    return draw(st.lists(st.tuples(st.integers(0, N + 2), st.integers(0, N + 2)), max_size=max_hops))


@st.composite
def standbys(draw, primaries: list[tuple[int, int]], clean: bool) -> list[tuple[int, int]]:
    """Spans of a replica's standbys: some primaries' spans; unless clean, maybe any span."""
    picked = draw(st.lists(st.sampled_from(primaries), max_size=2, unique=True)) if primaries else []
    if not clean and draw(st.integers(0, 3)) == 0:
        picked.append((draw(st.integers(0, N)), draw(st.integers(0, N + 1))))
    return picked


@st.composite
def cases(draw, pool: list[str]) -> tuple[list[int], Plan | None]:
    """Packed hops, and the Plan they pack from when a Plan can say it (replicas in order).

    Half the plans are clean (covers, standbys on primaries' spans, distinct nodes while the
    pool lasts): valid up to MAX_REPLICAS replicas. The others have moved or random spans,
    stray standbys, reused nodes, and a third of them replicas out of order, standby flags
    moved, or junk in a hop's top bits.
    """
    clean, max_hops = draw(st.booleans()), draw(st.integers(1, 3))
    reps = [draw(spans(max_hops, clean)) for _ in range(draw(st.integers(0, MAX_REPLICAS + 3)))]
    sbs = [draw(standbys(r, clean)) if draw(st.booleans()) else [] for r in reps]
    n_hops = sum(map(len, reps)) + sum(map(len, sbs))
    if clean or draw(st.booleans()):
        order = draw(st.permutations(pool))
        picks = [order[i % len(order)] for i in range(n_hops)]
    else:
        picks = draw(st.lists(st.sampled_from(pool), min_size=n_hops, max_size=n_hops))
    it = iter(picks)
    plan = Plan("m", N, tuple(Replica(tuple(Hop(NodeId(next(it)), a, b) for a, b in r),
                                      tuple(Hop(NodeId(next(it)), a, b) for a, b in sb)) for r, sb in zip(reps, sbs)))
    words = pack_plan(plan)
    if clean or not words or draw(st.integers(0, 2)):
        return words, plan
    # what a Plan cannot express: replicas out of order, a standby flag moved, junk bits
    i, j = draw(st.integers(0, len(words) - 1)), draw(st.integers(0, len(words) - 1))
    how = draw(st.integers(0, 3))
    if how == 0:
        label = draw(st.one_of(st.integers(0, MAX_REPLICAS + 3), st.just(255)))
        words[i] = words[i] & ~(0xFF << REPLICA_SHIFT) | label << REPLICA_SHIFT
    elif how == 1:
        words[i], words[j] = words[j], words[i]
    elif how == 2:
        words[i] ^= STANDBY_BIT
    else:
        words[i] |= 1 << draw(st.integers(201, 255))
    return words, None


def verdict(fn) -> tuple[str, dict] | None:
    try:
        fn()
    except (PlanError, ContractError) as exc:
        return exc.name, exc.args_by_name
    return None


def on_chain(net, words: list[int]) -> tuple[str, dict] | None:
    """The verdict of a dry run (eth_call) of submitJob with these hops."""
    chain = net[0]
    submit = chain.market.functions.submitJob(chain.model_id("m"), words, PARAMS)
    return verdict(lambda: call_or_raise(submit, **{"from": chain.address, "value": 10**15}))


def _judge(net, case) -> tuple[str, dict] | None:
    """Both verdicts on one case, asserted equal; returns the contract's."""
    words, plan = case
    chain_says = on_chain(net, words)
    assert verdict(lambda: check_hops(words, N)) == chain_says, words
    if plan is None:
        return chain_says
    expected = chain_says
    if chain_says is None and check_hops(words, N) < len(plan.replicas):
        # trailing replicas with no hops vanish in packing; validate refuses them
        expected = ("JobPlanIncomplete", {"replica": check_hops(words, N), "coveredTo": 0, "numBlocks": N})
    assert verdict(plan.validate) == expected, plan
    return chain_says


def _one_per_rule(pool: list[str]) -> list[list[int]]:
    """A plan breaking each rule (and a valid one), so every rule is judged whatever hypothesis draws."""
    a, b, c = pool[:3]
    w = pack_plan(Plan("m", N, (Replica((Hop(NodeId(a), 0, 3), Hop(NodeId(b), 3, N))),)))
    return [w, [], [w[0] | 1 << 240, w[1]], [w[0], w[1] & ~(0xFFFF << 160) | 4 << 160],
            [w[0], w[1] & ~(0xFFFF << 160) | 2 << 160], [w[0] & ~(0xFFFF << 176), w[1]],
            [w[0], w[1] & ~(0xFFFF << 176) | (N + 1) << 176], [w[0], w[1] & ~(0xFFFF << 176) | (N - 1) << 176],
            [w[0], w[1] | STANDBY_BIT], [w[0], w[1] & ~((1 << 160) - 1) | int(a, 16)],
            [w[0], w[1] | 2 << REPLICA_SHIFT], w + [pack_plan(Plan("m", N, (Replica((Hop(NodeId(c), 0, N),)),)))[0]
                                                    | 9 << REPLICA_SHIFT]]


def test_python_and_contract_judge_random_plans_alike(net):
    seen: dict[str | None, int] = {}
    for words in _one_per_rule(net[1]):
        v = _judge(net, (words, None))
        seen[v and v[0]] = seen.get(v and v[0], 0) + 1

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=cases(net[1]))
    def check(case):
        v = _judge(net, case)
        seen[v and v[0]] = seen.get(v and v[0], 0) + 1

    check()
    # every rule was exercised, and plenty of plans passed
    assert set(seen) >= {None, "JobPlanBadReplicas", "JobPlanGap", "JobPlanOverlap", "JobPlanIncomplete",
                         "JobPlanNodeReused", "JobPlanEmptyHop", "JobPlanPastEnd", "JobPlanBadStandby",
                         "JobPlanHopJunk"}, seen
    assert seen[None] >= 50, seen


def test_plan_errors_name_the_rule_and_say_what_to_do(net):
    _, (a, b, c, d, *_) = net
    reused = Plan("m", N, (Replica((Hop(a, 0, 3), Hop(a, 3, N))),))  # one node twice in one replica
    nine = Plan("m", N, tuple(Replica((Hop(n, 0, N),)) for n in net[1][: MAX_REPLICAS + 1]))
    for plan, name in ((reused, "JobPlanNodeReused"), (nine, "JobPlanBadReplicas")):
        with pytest.raises(PlanError, match=rf"^{name}\(") as err:
            plan.validate()
        assert on_chain(net, pack_plan(plan)) == (name, err.value.args_by_name)
    with pytest.raises(PlanError, match=r"uncovered at hop 1; re-plan"):
        Plan("m", N, (Replica((Hop(b, 0, 2), Hop(c, 3, N))),)).validate()
    # a last replica with no hops packs to a valid 1-replica plan; Python refuses the lost replica
    lost = Plan("m", N, (Replica((Hop(b, 0, N),)), Replica(())))
    assert on_chain(net, pack_plan(lost)) is None
    with pytest.raises(PlanError, match=r"^JobPlanIncomplete\(replica=1, coveredTo=0, numBlocks=6\)"):
        lost.validate()
    # a standby right after the primary it backs is a valid plan; anywhere else it is refused
    backed = Plan("m", N, (Replica((Hop(a, 0, 3), Hop(b, 3, N)), (Hop(c, 3, N),)),))
    assert on_chain(net, pack_plan(backed)) is None and backed.validate() is None
    stray = Plan("m", N, (Replica((Hop(a, 0, 3), Hop(b, 3, N)), (Hop(c, 1, N),)),))
    with pytest.raises(PlanError, match=r"^JobPlanBadStandby\(replica=0, hop=2\)") as err:
        stray.validate()
    assert on_chain(net, pack_plan(stray)) == ("JobPlanBadStandby", err.value.args_by_name)
    twice = Plan("m", N, (Replica((Hop(a, 0, N),), (Hop(c, 0, N), Hop(d, 0, N))),))  # one standby per primary
    assert on_chain(net, pack_plan(twice)) == ("JobPlanBadStandby", {"replica": 0, "hop": 2})
    assert net[0].market.functions.MAX_REPLICAS().call() == MAX_REPLICAS
