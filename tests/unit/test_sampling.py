"""Sampling is reproducible from (seed, step) alone and follows the distribution; top-k, top-p and the
repetition penalty are filters with exact properties, and stage splits sample the same tokens."""

from __future__ import annotations

import pytest
import torch
from eth_abi import encode
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.errors import TesseraError
from proto.types import JobId
from worker.planview import GenParams, JobRoute
from worker.ring.pipeline import tail_choose
from worker.sampling import argmax_classes, choose, distribution, penalized, sample, uniform
from worker.shard import load_stage
from worker.shard.tiny import save_tiny_model


def test_uniform_is_keccak_of_abi_encoded_seed_and_step():
    expected = int.from_bytes(keccak(encode(["uint256", "uint256"], [42, 7])), "big") / 2**256
    assert uniform(42, 7) == expected and 0 <= expected < 1
    assert uniform(42, 7) != uniform(42, 8) != uniform(43, 7)


def test_greedy_takes_the_argmax_and_the_lowest_index_on_ties():
    assert sample(torch.tensor([0.1, 3.0, -2.0]), 0, 0, 0) == 1
    assert sample(torch.tensor([1.0, 5.0, 5.0]), 0, 0, 0) == 1


def test_same_seed_and_step_give_the_same_token_in_any_dtype_or_layout():
    logits = torch.randn(500, generator=torch.Generator().manual_seed(3))
    picks = [sample(logits, 800, 99, t) for t in range(50)]
    assert picks == [sample(logits.double(), 800, 99, t) for t in range(50)]
    assert picks == [sample(logits.view(1, 1, -1), 800, 99, t) for t in range(50)]
    assert len(set(picks)) > 5  # it really samples


def test_token_is_the_inverse_cdf_of_the_uniform():
    logits = torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))
    for step in range(40):
        u = uniform(5, step)
        want = 0 if u < 0.2 else (1 if u < 0.7 else 2)
        assert sample(logits, 1000, 5, step) == want


def test_low_temperature_approaches_greedy_and_frequencies_follow_probabilities():
    logits = torch.tensor([0.0, 1.0, 2.0])
    assert all(sample(logits, 1, 1, t) == 2 for t in range(20))
    counts = torch.bincount(torch.tensor([sample(logits, 1000, 11, t) for t in range(3000)]), minlength=3)
    p = torch.softmax(logits.double(), 0)
    assert torch.allclose(counts.double() / 3000, p, atol=0.03)


def test_invalid_inputs_are_refused():
    with pytest.raises(TesseraError):
        sample(torch.tensor([float("nan"), 1.0]), 0, 0, 0)
    with pytest.raises(TesseraError):
        sample(torch.tensor([1.0]), -1, 0, 0)
    with pytest.raises(TesseraError):
        uniform(-1, 0)


def test_classifier_output_is_the_argmax_per_row():
    assert argmax_classes(torch.tensor([[0.1, 0.9], [2.0, -1.0]])) == [1, 0]


# ---------------------------------------------------------------- top-k, top-p, repetition penalty

_rows = st.lists(st.integers(-40, 40), min_size=2, max_size=40).map(
    lambda v: torch.tensor(v, dtype=torch.float32) / 8)  # coarse values: many exact ties


@settings(max_examples=200, deadline=None)
@given(_rows, st.integers(1, 50), st.integers(100, 3000))  # no probability underflows to 0
def test_top_k_keeps_the_k_largest_with_ties_broken_by_the_lower_id(row, k, temp):
    p = distribution(row, temp, top_k=k)
    kept = sorted(range(row.numel()), key=lambda i: (-float(row[i]), i))[:k]
    assert set(map(int, p.nonzero()[0])) == set(kept)
    assert abs(p.sum() - 1) < 1e-12


@settings(max_examples=200, deadline=None)
@given(_rows, st.integers(1, 1000), st.integers(100, 3000))
def test_top_p_keeps_the_fewest_most_likely_ids_that_reach_p(row, top_p, temp):
    full = distribution(row, temp)
    p = distribution(row, temp, top_p_milli=top_p)
    kept = sorted(map(int, p.nonzero()[0]), key=lambda i: (-full[i], i))
    ranked = sorted(range(row.numel()), key=lambda i: (-full[i], i))
    assert kept == ranked[:len(kept)]  # a prefix of the ranking, ties by the lower id
    mass = sum(full[i] for i in kept)
    assert mass >= top_p / 1000 - 1e-12 or len(kept) == row.numel()
    assert len(kept) == 1 or sum(full[i] for i in kept[:-1]) < top_p / 1000 + 1e-12  # none spare
    assert abs(p.sum() - 1) < 1e-12 and all(abs(p[i] - full[i] / mass) < 1e-12 for i in kept)


@settings(max_examples=100, deadline=None)
@given(_rows, st.integers(1, 5000), st.lists(st.integers(0, 1), max_size=6))
def test_repetition_penalty_lowers_exactly_the_generated_ids(row, milli, hist):
    z = penalized(row, milli, hist)
    base = row.double().numpy()
    for i in range(row.numel()):
        if i not in hist or milli == 1000:
            assert z[i] == base[i]
        else:
            assert z[i] == (base[i] / (milli / 1000) if base[i] > 0 else base[i] * (milli / 1000))


@settings(max_examples=100, deadline=None)
@given(_rows, st.integers(0, 2**256 - 1), st.integers(0, 10**6), st.integers(0, 8), st.integers(1, 1000),
       st.integers(500, 2000))
def test_the_sampled_id_always_has_mass_and_the_rule_is_one_function(row, seed, step, k, top_p, pen):
    kw = dict(top_k=k, top_p_milli=top_p, repetition_penalty_milli=pen, history=[0, 1, 1])
    tok = sample(row, 700, seed, step, **kw)
    p = distribution(row, 700, **kw)
    assert p[tok] > 0 and tok == choose(p, uniform(seed, step))
    assert tok == sample(row.double().view(1, -1), 700, seed, step, **kw)  # dtype and layout do not matter


def test_filters_off_change_nothing():
    logits = torch.randn(300, generator=torch.Generator().manual_seed(5))
    plain = [sample(logits, 900, 3, t) for t in range(100)]
    assert plain == [sample(logits, 900, 3, t, top_k=0, top_p_milli=1000, repetition_penalty_milli=1000,
                            history=[1, 2, 3]) for t in range(100)]
    assert plain == [sample(logits, 900, 3, t, top_k=300) for t in range(100)]


def test_top_k_one_is_greedy_and_greedy_ignores_the_other_filters():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(6))
    best = int(logits.argmax())
    assert {sample(logits, 1500, 9, t, top_k=1) for t in range(30)} == {best}
    assert {sample(logits, 1500, 9, t, top_p_milli=1) for t in range(30)} == {best}
    assert sample(logits, 0, 9, 0, top_k=5, top_p_milli=10) == best
    assert sample(torch.tensor([1.0, 1.0, 0.5]), 1000, 0, 0, top_k=1) == 0  # tie: the lower id


def test_greedy_with_a_repetition_penalty_moves_off_a_repeated_token():
    logits = torch.tensor([2.0, 1.9, -1.0])
    assert sample(logits, 0, 0, 0, repetition_penalty_milli=1200, history=[]) == 0
    assert sample(logits, 0, 0, 0, repetition_penalty_milli=1200, history=[0]) == 1  # 2.0 / 1.2 < 1.9
    assert sample(logits, 0, 0, 0, repetition_penalty_milli=800, history=[1]) == 1  # a penalty < 1 favours it


def test_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0])
    kw = dict(top_k=4, top_p_milli=800)
    p = distribution(logits, 1000, **kw)
    assert p[0] == 0 and (p > 0).sum() == 3  # top-k drops id 0, top-p then id 1
    counts = torch.bincount(torch.tensor([sample(logits, 1000, 21, t, **kw) for t in range(3000)]), minlength=5)
    assert torch.allclose(counts.double() / 3000, torch.tensor(p), atol=0.03)


def test_filter_parameters_out_of_range_are_refused():
    row = torch.tensor([1.0, 2.0])
    for kw in (dict(top_k=-1), dict(top_p_milli=0), dict(top_p_milli=1001), dict(repetition_penalty_milli=0)):
        with pytest.raises(TesseraError):
            sample(row, 500, 0, 0, **kw)
    with pytest.raises(TesseraError, match="outside the vocabulary"):
        sample(row, 500, 0, 0, repetition_penalty_milli=1100, history=[2])


def test_two_stage_splits_sample_the_same_tokens(tmp_path):
    """The tail's choice (top-k, top-p, repetition penalty, temperature) through 1, 2 and 3 stages of a
    tiny Llama: the same ids, since the stages reproduce the logits and the rule needs nothing else."""
    d = save_tiny_model("llama", tmp_path / "llama")
    params = GenParams(max_tokens=20, temperature_milli=1300, seed=77, top_k=40, top_p_milli=900,
                       repetition_penalty_milli=1300)
    route = JobRoute(JobId(1), "llama", 4, (), params)

    def generate(spans):
        stages = [load_stage(d, a, b) for a, b in spans]
        caches = [s.new_cache() for s in stages]
        x, ids, done = torch.tensor([[5, 17, 42, 9]]), [], False
        for step in range(params.max_tokens):
            for s, c in zip(stages, caches):
                x = s(x, c, last=True)
            new, done = tail_choose(route, x, step, ids)
            ids += new
            if done:
                break
            x = torch.tensor([new])
        return ids

    one = generate([(0, 4)])
    assert len(one) == 20 and len(set(one)) > 5
    assert generate([(0, 2), (2, 4)]) == one == generate([(0, 1), (1, 3), (3, 4)])
