"""Sharded tiny decoders (GPT-2, Llama, Qwen2, Mistral) reproduce the unsplit model exactly."""

from __future__ import annotations

import pytest
import torch

from proto.errors import ModelError
from worker.quant import resident_bytes
from worker.shard import load_full, load_stage
from worker.shard.tiny import save_tiny_model

torch.set_num_threads(2)

FAMILIES = ["gpt2", "llama", "qwen2", "mistral"]
SPLITS = [[(0, 2), (2, 4)], [(0, 1), (1, 3), (3, 4)]]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    d = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    return d, load_full(d)


def _ids(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def _run(stages, x, caches=None):
    for i, s in enumerate(stages):
        x = s(x, None if caches is None else caches[i])
    return x


@pytest.mark.parametrize("spans", SPLITS, ids=["2-stages", "3-stages"])
def test_full_sequence_through_stages_is_bit_exact(tiny, spans):
    d, full = tiny
    ids = _ids(2, 24)
    with torch.no_grad():
        ref = full(ids).logits
    out = _run([load_stage(d, s, e) for s, e in spans], ids)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)


def test_cached_decoding_matches_generate(tiny):
    d, full = tiny
    stages = [load_stage(d, s, e) for s, e in SPLITS[1]]
    caches = [s.new_cache() for s in stages]
    prompt = _ids(1, 12, seed=2)
    x, got = prompt, []
    for _ in range(24):  # past the sliding window of 8 used by the qwen2/mistral configs
        x = _run(stages, x, caches)[:, -1].argmax(-1, keepdim=True)
        got.append(int(x))
    want = full.generate(prompt, max_new_tokens=24, min_new_tokens=24, do_sample=False)[0, 12:].tolist()
    assert got == want
    assert [s.cache_len(c) for s, c in zip(stages, caches)] == [12 + 23] * 3  # the last token is sampled, not yet fed
    assert stages[1].cache_bytes(caches[1]) > 0
    assert stages[1].cache_bytes(stages[1].new_cache()) == 0


def test_a_tail_asked_for_the_last_position_computes_only_its_logits(tiny):
    """What the ring's tail samples from: the last row of the full logits, as generate computes it."""
    d, full = tiny
    head, tail = load_stage(d, 0, 2), load_stage(d, 2, 4)
    ids = _ids(2, 9, seed=3)
    h = head(ids, head.new_cache(), last=True)  # a non-tail stage ignores ``last``
    assert h.shape[:2] == (2, 9)
    out = tail(h, tail.new_cache(), last=True)
    with torch.no_grad():
        want = full(ids, logits_to_keep=1).logits
    assert out.shape == (2, 1, want.shape[-1])
    torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


def test_stage_holds_only_its_own_weights(tiny):
    d, full = tiny
    mid = load_stage(d, 1, 3)
    head, tail = load_stage(d, 0, 1), load_stage(d, 3, 4)
    assert mid.spec.start == 1 and mid.spec.end == 3 and not mid.spec.is_head and not mid.spec.is_tail
    # the middle stage has two blocks and no embedding or head
    assert resident_bytes(mid) < 0.5 * resident_bytes(full)
    assert resident_bytes(head) + resident_bytes(mid) + resident_bytes(tail) >= resident_bytes(full) * 0.99
    assert all(not n.startswith(("embed_tokens", "wte", "lm_head")) for n, _ in mid.named_parameters())


def test_bad_span_is_refused(tiny):
    d, _ = tiny
    for start, end in [(2, 2), (-1, 2), (0, 5)]:
        with pytest.raises(ModelError, match="span"):
            load_stage(d, start, end)
    with pytest.raises(ModelError, match="weights"):
        load_stage(d, 0, 4, weights="int4")
