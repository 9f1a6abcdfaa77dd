"""Every checked causal-LM architecture, split into 1, 2 and 3 stages, reproduces the unsplit model:
the same logits bit for bit over a whole sequence, and with per-stage KV caches the same greedy tokens
as transformers' ``generate`` with logits equal to fp32 round-off."""

from __future__ import annotations

import pytest
import torch

from proto.errors import ModelError
from worker.quant import resident_bytes
from worker.shard import load_full, load_stage, model_skeleton
from worker.shard.tiny import ARCHITECTURES, save_tiny_model

SPLITS = {1: [(0, 4)], 2: [(0, 2), (2, 4)], 3: [(0, 1), (1, 3), (3, 4)]}
TOKENS = 24  # past the sliding window of 8 of the windowed configs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices gain nothing from threads, and a busy 2-core machine makes 2 threads 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def tiny(request, tmp_path_factory):
    d = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    full = load_full(d)
    full.generation_config.eos_token_id = None  # generate exactly TOKENS tokens, none suppressed
    return d, full


def _ids(b: int, t: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def _run(stages, x, caches=None):
    for i, s in enumerate(stages):
        x = s(x, None if caches is None else caches[i])
    return x


@pytest.mark.parametrize("parts", SPLITS, ids=lambda p: f"{p}-stages")
def test_full_sequence_through_stages_is_bit_exact(tiny, parts):
    d, full = tiny
    ids = _ids(2, 24)
    with torch.no_grad():
        ref = full(ids).logits
    out = _run([load_stage(d, s, e) for s, e in SPLITS[parts]], ids)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)


@pytest.mark.parametrize("parts", SPLITS, ids=lambda p: f"{p}-stages")
def test_cached_decoding_matches_generate(tiny, parts):
    d, full = tiny
    stages = [load_stage(d, s, e) for s, e in SPLITS[parts]]
    caches = [s.new_cache() for s in stages]
    prompt = _ids(1, 12, seed=2)
    x, got, logits = prompt, [], []
    for _ in range(TOKENS):
        out = _run(stages, x, caches)[:, -1]
        logits.append(out)
        x = out.argmax(-1, keepdim=True)
        got.append(int(x))
    want = full.generate(prompt, max_new_tokens=TOKENS, do_sample=False, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=0)
    assert got == want.sequences[0, 12:].tolist()
    torch.testing.assert_close(torch.cat(logits), torch.cat(want.logits), rtol=0, atol=1e-5)
    assert [s.cache_len(c) for s, c in zip(stages, caches)] == [12 + TOKENS - 1] * parts  # last token not fed
    assert stages[-1].cache_bytes(caches[-1]) > 0
    assert stages[-1].cache_bytes(stages[-1].new_cache()) == 0


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
    # the middle stage has blocks 1 and 2 and no embedding or head: every parameter is in those layers
    layers = model_skeleton(d).layers_path
    assert {n.split(".")[len(layers.split("."))+1] for n, _ in mid.named_parameters()} == {"1", "2"}
    assert resident_bytes(mid) < 0.6 * resident_bytes(full)
    assert resident_bytes(head) + resident_bytes(mid) + resident_bytes(tail) >= resident_bytes(full) * 0.99


def test_bad_span_is_refused(tiny):
    d, _ = tiny
    for start, end in [(2, 2), (-1, 2), (0, 5)]:
        with pytest.raises(ModelError, match="span"):
            load_stage(d, start, end)
    with pytest.raises(ModelError, match="weights"):
        load_stage(d, 0, 4, weights="int4")
