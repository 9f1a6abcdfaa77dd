"""Rebalancing advice points arriving operators at the under-served blocks."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.advise import block_capacity, suggest_span


@dataclass(frozen=True)
class Rec:  # the shape of a chain NodeRecord that advise relies on
    start: int
    end: int
    active: bool = True
    throughput: float = 100.0


def test_capacity_counts_active_nodes_per_block():
    nodes = [Rec(0, 3), Rec(2, 5), Rec(0, 5, active=False)]
    assert block_capacity(nodes, 5) == [1, 1, 2, 1, 1]


def test_chain_records_that_are_not_active_do_not_count():
    @dataclass(frozen=True)
    class NodeRecord:  # chain.records.NodeRecord carries a status string, not a flag
        start: int
        end: int
        status: str

    nodes = [NodeRecord(0, 2, "active"), NodeRecord(2, 4, "unbonding")]
    assert block_capacity(nodes, 4) == [1, 1, 0, 0]
    assert suggest_span(nodes, 4, 2) == (2, 4)


def test_suggests_the_empty_window():
    nodes = [Rec(0, 4), Rec(0, 4), Rec(6, 10)]
    assert suggest_span(nodes, 10, 2) == (4, 6)


def test_window_never_exceeds_the_model_and_empty_network_starts_at_zero():
    assert suggest_span([], 6, 4) == (0, 4)
    assert suggest_span([], 6, 100) == (0, 6)


def test_ties_on_counts_go_to_less_throughput():
    nodes = [Rec(0, 2, throughput=1000.0), Rec(2, 4, throughput=10.0)]
    assert suggest_span(nodes, 4, 2) == (2, 4)


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="max_blocks"):
        suggest_span([], 4, 0)


@given(
    spans=st.lists(st.tuples(st.integers(0, 11), st.integers(1, 12)).filter(lambda t: t[0] < t[1]), max_size=8),
    k=st.integers(1, 12),
)
def test_suggested_window_is_the_least_served(spans, k):
    nodes = [Rec(s, e) for s, e in spans]
    cap = block_capacity(nodes, 12)
    s, e = suggest_span(nodes, 12, k)
    assert e - s == k and 0 <= s and e <= 12
    assert min(cap[s:e]) == min(min(cap[x : x + k]) for x in range(12 - k + 1))


def test_without_a_block_limit_the_advice_is_the_uncovered_gap_not_the_whole_model():
    """Regression: with [0, 15) served and [15, 30) empty, advise without --max-blocks said [0, 30)."""
    nodes = [SimpleNamespace(start=0, end=15, status="active")]
    assert suggest_span(nodes, 30) == (15, 30)
    assert suggest_span([], 30) == (0, 30)
    two_gaps = [SimpleNamespace(start=2, end=4, status="active"), SimpleNamespace(start=5, end=10, status="active")]
    assert suggest_span(two_gaps, 10) == (0, 2)  # the first longest run of the least-served blocks
