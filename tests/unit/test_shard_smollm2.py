"""SmolLM2-135M split into stages: exact logits, same greedy tokens as transformers' generate.

The first run converts the packaged GGUF into $TESSERA_HOME/models (about 30 s);
later runs reuse it.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from worker import store
from worker.quant import resident_bytes
from worker.shard import load_full, load_stage

torch.set_num_threads(2)

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at a temperature of",
]


@pytest.fixture(scope="session")
def smollm2():
    return store.fetch("smollm2-135m").directory


@pytest.fixture(scope="module")
def full(smollm2):
    return load_full(smollm2)


@pytest.fixture(scope="module")
def tok(smollm2):
    return AutoTokenizer.from_pretrained(smollm2)


@pytest.fixture(scope="module")
def three(smollm2):
    return [load_stage(smollm2, s, e) for s, e in [(0, 7), (7, 22), (22, 30)]]


def _greedy(stages, ids: torch.Tensor, n: int, eos: int | None = None) -> list[int]:
    """Greedy decoding through the stages, each keeping its own KV cache; stops after ``eos``."""
    caches = [s.new_cache() for s in stages]
    x, out = ids, []
    for _ in range(n):
        for s, c in zip(stages, caches):
            x = s(x, c)
        x = x[:, -1].argmax(-1, keepdim=True)
        out.append(int(x))
        if out[-1] == eos:
            break
    return out


def test_manifest_describes_the_converted_model(smollm2):
    m = store.load_manifest("smollm2-135m")
    assert (m.kind, m.family, m.num_blocks) == ("causal-lm", "llama", 30)
    assert (smollm2 / "tokenizer.json").is_file() and m.tokenizer_hash != bytes(32)
    assert set(store.verify_span(m, 28, 30, m.weights_root)) == {"block.28", "block.29", "output"}


@pytest.mark.parametrize("spans", [[(0, 15), (15, 30)], [(0, 7), (7, 22), (22, 30)]], ids=["2-stages", "3-stages"])
def test_full_sequence_logits_are_bit_exact(smollm2, full, tok, spans):
    ids = tok(PROMPTS[2] + " there lived an old clockmaker who", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = full(ids).logits
    x = ids
    for s, e in spans:
        x = load_stage(smollm2, s, e)(x)
    assert torch.equal(x, ref)


def test_cached_decoding_matches_generate_on_five_prompts(full, tok, three):
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        want = full.generate(ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1]:].tolist()
        assert _greedy(three, ids, 32, eos=tok.eos_token_id) == want, prompt
        assert len(want) == 32 or want[-1] == tok.eos_token_id


def test_capital_of_france_is_paris(tok, three):
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids
    assert tok.decode(_greedy(three, ids, 2)) == " Paris."


def test_a_middle_stage_is_a_fraction_of_the_model(full, three):
    # 15 of 30 blocks, no embedding and no head: well under half of the 538 MB model
    assert resident_bytes(three[1]) < 0.4 * resident_bytes(full)
    assert three[0].spec.is_head and three[2].spec.is_tail and three[1].spec.num_blocks == 30
