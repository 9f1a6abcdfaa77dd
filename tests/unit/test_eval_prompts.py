"""Deterministic English prompts for the evaluation (bench.eval.prompts) and replica configs."""

import pytest

from bench.eval.prompts import english_prompts, sentences


def test_fifty_distinct_prompts_of_fixed_length_same_every_time():
    a = english_prompts(50, words=12)
    assert a == english_prompts(50, words=12)
    assert len(set(a)) == 50
    assert all(len(p.split()) == 12 for p in a)
    assert not any(ch in p for p in a for ch in "`*_=>{}[]")


def test_sentences_skip_code_and_short_lines():
    text = ("The quick brown fox jumps over the lazy dog today. Short one.\n\n"
            "   >>> x = some_code(1, 2, 3, 4, 5, 6, 7, 8)\n\n"
            "* a bullet item that is long enough to count as prose here")
    assert sentences(text, 5) == ["The quick brown fox jumps over the lazy dog today"]


def test_too_few_prompts_is_a_clear_error():
    with pytest.raises(ValueError, match="ask for fewer"):
        english_prompts(3, words=4, topics={"a": "One two three four five six seven."})


def test_replica_config_validates():
    from bench.eval.decode import Replica
    from proto.errors import TesseraError

    assert Replica("x", dtype="bf16", cuts=3, codec="int8-outlier").cuts == 3
    with pytest.raises(ValueError):
        Replica("x", dtype="fp8")
    with pytest.raises(ValueError):
        Replica("x", cuts=-1)
    with pytest.raises(TesseraError):
        Replica("x", codec="nope")
