"""Sampling is reproducible from (seed, step) alone and follows the distribution."""

from __future__ import annotations

import pytest
import torch
from eth_abi import encode
from eth_hash.auto import keccak

from proto.errors import TesseraError
from worker.sampling import argmax_classes, sample, uniform


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
