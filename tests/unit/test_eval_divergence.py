"""Honest-disagreement core: first divergent step and top-2 margins (bench.eval.divergence)."""

import pytest
import torch

from bench.eval.divergence import Run, compare, first_divergence, margin_threshold_rate, top2_margin


def run_of(logits: torch.Tensor) -> Run:
    """Greedy ids and margins of a (T, V) logit sequence, as a replica would record them."""
    return Run(tuple(int(i) for i in logits.argmax(-1)), tuple(float(m) for m in top2_margin(logits)))


def test_top2_margin_is_gap_between_two_largest():
    logits = torch.tensor([[1.0, 3.0, 2.5], [4.0, 4.0, -1.0]])
    assert torch.allclose(top2_margin(logits), torch.tensor([0.5, 0.0]))
    assert top2_margin(torch.tensor([0.0, 2.0, 1.0], dtype=torch.bfloat16)).dtype == torch.float32
    with pytest.raises(ValueError):
        top2_margin(torch.tensor([[1.0]]))


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([7, 2], [1, 2]) == 0
    with pytest.raises(ValueError):
        first_divergence([1, 2], [1, 2, 3])


def test_run_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        Run((1, 2), (0.5,))


def test_near_tie_flip_is_found_at_its_step_with_the_reference_margin():
    torch.manual_seed(0)
    ref = torch.randn(32, 50) * 3
    ref[:, 7] += 20  # token 7 wins confidently everywhere ...
    ref[11, 7], ref[11, 3] = 30.0, 30.0 - 0.004  # ... except a near-tie at step 11
    other = ref.clone()
    other[11, 3] += 0.01  # an honest perturbation tips the tie
    other[12:] = torch.randn(20, 50)  # after the fork the continuations differ anyway
    res = compare([run_of(ref), run_of(ref)], [run_of(other), run_of(ref)])
    assert res["differ"] == 1 and res["differ_frac"] == 0.5
    assert res["first_steps"] == [11]
    assert res["ref_margin_at_divergence"] == [pytest.approx(0.004, abs=1e-4)]
    assert res["other_margin_at_divergence"] == [pytest.approx(0.006, abs=1e-4)]
    assert res["margin_drift_max"] == 0.0  # identical logits until the tie
    # only the near-tie step (once in each of the two reference prompts) is that close: 2 of 64 steps
    assert res["steps_below_max_divergence_margin"] == pytest.approx(2 / 64, abs=1e-4)


def test_identical_runs_do_not_differ():
    r = Run((1, 2, 3), (0.1, 2.0, 3.0))
    res = compare([r] * 4, [r] * 4)
    assert res["differ"] == 0 and res["first_steps"] == [] and res["first_step_median"] is None
    assert res["ref_margin_at_divergence_q"]["p50"] is None
    assert res["steps_below_max_divergence_margin"] == 0.0


def test_compare_needs_the_same_prompts():
    r = Run((1,), (1.0,))
    with pytest.raises(ValueError):
        compare([r, r], [r])


def test_margin_threshold_rate_counts_prompts_with_a_close_step():
    runs = [Run((1, 2), (0.05, 3.0)), Run((1, 2), (2.0, 3.0)), Run((1, 2), (0.3, 0.2))]
    assert margin_threshold_rate(runs, 0.1) == pytest.approx(1 / 3)
    assert margin_threshold_rate(runs, 0.25) == pytest.approx(2 / 3)
    assert margin_threshold_rate([], 1.0) == 0.0


def test_margin_drift_measures_logit_noise_that_flips_nothing():
    torch.manual_seed(1)
    ref = torch.randn(16, 20)
    ref[:, 4] += 10  # confident everywhere
    noisy = ref + 1e-3 * torch.randn(16, 20)
    res = compare([run_of(ref)], [run_of(noisy)])
    assert res["differ"] == 0
    assert 0 < res["margin_drift_max"] < 0.01
    assert compare([run_of(ref)], [run_of(ref.clone())])["margin_drift_max"] == 0.0
