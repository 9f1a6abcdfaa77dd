"""What the store refuses to import, and why: a family is stored only if its stages reproduce it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from proto.errors import ModelError
from worker import store
from worker.shard import load_stage, stage_layout
from worker.shard.check import check_split
from worker.shard.tiny import REFUSED, save_tiny_model


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("arch", list(REFUSED))
def test_import_refuses_with_the_reason(home, tmp_path, arch):
    src = save_tiny_model(arch, tmp_path / arch)
    with pytest.raises(ModelError) as refused:
        store.import_dir(src)
    model_type, _, why = REFUSED[arch]
    assert f"model_type {model_type!r}" in str(refused.value) and why in str(refused.value)
    assert not list((home / "models").iterdir())  # nothing half-written left behind


def test_a_hybrid_model_names_its_recurrent_layers(tmp_path):
    with pytest.raises(ModelError, match=r"state in layers \[0, 1, 2\]; a stage's session cache holds attention"):
        stage_layout(save_tiny_model("qwen3_next", tmp_path / "q"))  # layer 3 is full attention


def test_a_model_type_without_a_causal_lm_is_refused(home, tmp_path):
    d = tmp_path / "t5"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 64, "num_layers": 2}))
    save_file({"shared.weight": torch.zeros(4, 4)}, d / "model.safetensors")
    with pytest.raises(ModelError, match="'t5' is not supported: it is not a causal language model"):
        store.import_dir(d)


def _renumbering_loader(model_dir, start, end):
    """Stages as the old loader built them: GPT-2 scales attention by a layer index renumbered from 0."""
    stage = load_stage(model_dir, start, end)
    for m in stage.modules():
        if getattr(m, "scale_attn_by_inverse_layer_idx", False):
            m.scaling *= (m.layer_idx + 1) / (m.layer_idx - start + 1)
    return stage


def test_the_import_check_refuses_stages_that_are_not_exact(tmp_path):
    d = save_tiny_model("gpt2-inverse-layer-scaling", tmp_path / "gpt2")
    assert check_split(d) == {2: 0.0, 3: 0.0}
    with pytest.raises(ModelError, match=r"cannot be split exactly: through 2 stages \[\(0, 2\), \(2, 4\)\]"):
        check_split(d, load=_renumbering_loader)


def test_a_family_that_splits_exactly_is_stored(home, tmp_path):
    m = store.import_dir(save_tiny_model("gpt2-inverse-layer-scaling", tmp_path / "g"), name="g")
    assert (m.kind, m.family, m.num_blocks) == ("causal-lm", "gpt2", 4)
