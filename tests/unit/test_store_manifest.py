"""The model store: import, manifests, stage hashes, weights root and tamper refusal."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from eth_hash.auto import keccak
from safetensors.torch import load_file, save_file

from proto.errors import ModelError, WeightHashMismatch
from worker import store
from worker.shard import stage_layout
from worker.shard.tiny import save_tiny_model
from worker.store.hashing import files_hash, hash_named_tensors, stage_hashes, weights_root
from worker.store.manifest import CONFIG_FILES, metadata_hashes

torch.set_num_threads(2)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    return save_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2-src"))


def test_hash_depends_on_names_values_dtype_and_shape_not_order():
    a, b = torch.arange(6.0).reshape(2, 3), torch.ones(4)
    h = hash_named_tensors([("a", a), ("b", b)])
    assert h == hash_named_tensors([("b", b), ("a", a)])
    assert len(h) == 32
    changed = a.clone()
    changed[1, 2] += 1e-6
    for items in ([("a", changed), ("b", b)], [("a", a.double()), ("b", b)], [("a", a.reshape(3, 2)), ("b", b)],
                  [("c", a), ("b", b)]):
        assert hash_named_tensors(items) != h


def test_import_writes_a_manifest_that_commits_to_every_stage(home, tiny_src):
    m = store.import_dir(tiny_src, name="tiny-gpt2")
    assert (m.name, m.kind, m.family, m.num_blocks) == ("tiny-gpt2", "causal-lm", "gpt2", 4)
    assert m.weights_root == keccak(b"".join(m.stage_hashes))
    assert m.config_hash == files_hash(m.directory, CONFIG_FILES) != bytes(32)
    assert m.tokenizer_hash == bytes(32)  # no tokenizer files in this directory
    assert len(set(m.block_hashes)) == 4  # random blocks differ
    again = store.load_manifest("tiny-gpt2")
    assert again == m and again.directory == home / "models" / "tiny-gpt2"
    assert store.resolve(str(m.directory)) == m.directory
    assert [x.name for x in store.list_models()] == ["tiny-gpt2"]
    on_disk = json.loads((m.directory / "manifest.json").read_text())
    assert on_disk["stage_hashes"]["blocks"][2] == "0x" + m.block_hashes[2].hex()


def test_tied_head_is_hashed_as_part_of_the_output_stage(tiny_src):
    layout = stage_layout(tiny_src)
    assert dict(layout.output)["lm_head.weight"] == "transformer.wte.weight"
    assert {n for n, _ in layout.input} == {"wte.weight", "wpe.weight"}
    assert all(n.startswith(("attn.", "ln_", "mlp.")) for n, _ in layout.blocks[0])


def test_unknown_model_tells_the_user_how_to_get_it(home):
    with pytest.raises(ModelError, match="tessera model fetch"):
        store.resolve("no-such-model")
    with pytest.raises(ModelError, match="unknown model"):
        store.fetch("no-such-model")


def test_verify_span_accepts_intact_weights_and_refuses_tampered_ones(home, tiny_src):
    m = store.import_dir(tiny_src, name="tiny")
    assert set(store.verify_span(m, 0, 2, m.weights_root)) == {"input", "block.0", "block.1"}
    assert set(store.verify_span(m, 2, 4, None)) == {"block.2", "block.3", "output"}
    with pytest.raises(WeightHashMismatch, match="on chain"):
        store.verify_span(m, 0, 2, keccak(b"another model"))
    path = m.directory / "model.safetensors"
    sd = load_file(path)
    sd["transformer.h.3.mlp.c_fc.weight"][0, 0] += 0.01
    save_file(sd, path, metadata={"format": "pt"})
    store.verify_span(m, 0, 2, m.weights_root)  # blocks it does not serve are not its business
    with pytest.raises(WeightHashMismatch, match="block.3"):
        store.verify_span(m, 2, 4, m.weights_root)


def test_tampered_manifest_is_refused(home, tiny_src):
    m = store.import_dir(tiny_src, name="tiny")
    d = json.loads((m.directory / "manifest.json").read_text())
    d["stage_hashes"]["blocks"][1] = "0x" + "11" * 32
    (m.directory / "manifest.json").write_text(json.dumps(d))
    forged = store.load_manifest("tiny")
    with pytest.raises(WeightHashMismatch, match="inconsistent"):
        store.verify_span(forged, 0, 4, m.weights_root)


def test_import_is_idempotent_and_converts_pytorch_bin(home, tiny_src, tmp_path):
    first = store.import_dir(tiny_src, name="tiny")
    assert store.import_dir(tiny_src, name="tiny") == first
    bin_dir = tmp_path / "bin-model"
    bin_dir.mkdir()
    shutil.copy(tiny_src / "config.json", bin_dir / "config.json")
    torch.save(load_file(tiny_src / "model.safetensors"), bin_dir / "pytorch_model.bin")
    converted = store.import_dir(bin_dir)
    assert converted.name == "bin-model"
    assert converted.weights_root == first.weights_root  # same tensors, same commitment
    assert not (converted.directory / "pytorch_model.bin").exists()


def test_weights_root_is_keccak_of_concatenated_stage_hashes(tiny_src):
    hs = stage_hashes(tiny_src)
    order = [hs["input"], *(hs[f"block.{i}"] for i in range(4)), hs["output"]]
    assert weights_root(order) == keccak(b"".join(order))
    assert stage_hashes(tiny_src, start=1, end=3) == {k: hs[k] for k in ("block.1", "block.2")}
    with pytest.raises(ValueError):
        weights_root([b"short"])


def test_unsupported_directories_are_refused(home, tmp_path):
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    save_file({"x": torch.zeros(1)}, tmp_path / "t5" / "model.safetensors")
    with pytest.raises(ModelError, match="not supported"):
        store.import_dir(tmp_path / "t5")
    with pytest.raises(ModelError, match="config.json"):
        store.import_dir(tmp_path)
    assert not [p for p in (home / "models").iterdir()]  # nothing half-written left behind


def test_tampered_int8_calibration_is_refused(home, tiny_src, tmp_path):
    src = tmp_path / "with-outliers"
    shutil.copytree(tiny_src, src)
    (src / "int8_outliers.json").write_text('{"format": 1, "layers": {"0/mlp.c_fc": [1]}}')
    m = store.import_dir(src, name="tiny")
    assert m.int8_outliers_hash == keccak((src / "int8_outliers.json").read_bytes())
    store.verify_span(m, 0, 1, m.weights_root)
    (m.directory / "int8_outliers.json").write_text('{"format": 1, "layers": {"0/mlp.c_fc": [2]}}')
    with pytest.raises(WeightHashMismatch, match="int8_outliers"):
        store.verify_span(m, 0, 1, m.weights_root)


def test_config_hash_covers_the_generation_config(tmp_path):
    """Finding 17: generation_config.json (end-of-sequence ids) was hashed nowhere."""
    (tmp_path / "config.json").write_text('{"eos_token_id": 2}')
    before = metadata_hashes(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [2, 7]}')
    after = metadata_hashes(tmp_path)
    assert after[0] == before[0] == bytes(32) and after[1] != before[1]
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": true}')
    assert metadata_hashes(tmp_path)[0] != bytes(32)


def test_a_format_1_manifest_is_upgraded_in_place(home, tiny_src):
    m = store.import_dir(tiny_src, name="tiny-gpt2")
    path = m.directory / "manifest.json"
    old = {**json.loads(path.read_text()), "format": 1, "config_hash": "0x" + "11" * 32}
    path.write_text(json.dumps(old))
    again = store.load_manifest("tiny-gpt2")
    assert again.config_hash == m.config_hash and json.loads(path.read_text())["format"] == 2
