"""What the store refuses to import, and why: a family is stored only if its stages reproduce it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

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


class OddConfig(PretrainedConfig):
    """A tiny user-defined causal LM whose ``quirk`` breaks one rule a stage boundary needs."""

    model_type = "tessera-odd"

    def __init__(self, vocab_size=32, hidden_size=8, num_hidden_layers=3, quirk="", **kwargs):
        self.vocab_size, self.hidden_size, self.num_hidden_layers, self.quirk = (vocab_size, hidden_size,
                                                                                num_hidden_layers, quirk)
        super().__init__(**kwargs)


class OddForCausalLM(PreTrainedModel):
    config_class = OddConfig
    base_model_prefix = "odd"

    def __init__(self, config):
        super().__init__(config)
        h, n = config.hidden_size, config.num_hidden_layers
        self.embed = nn.Embedding(config.vocab_size, h)
        self.layers = nn.ModuleList(nn.Linear(h, h) for _ in range(n))
        if config.quirk == "twin-lists":
            self.twins = nn.ModuleList(nn.Linear(h, h) for _ in range(n))
        self.mid = nn.Linear(h, h)
        self.head = nn.Linear(h, config.vocab_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids=None, inputs_embeds=None, past_key_values=None, use_cache=None, **kwargs):
        quirk = self.config.quirk
        h = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        layers = list(self.layers)[::-1] if quirk == "reversed" else self.layers
        for i, layer in enumerate(layers):
            h = layer(h)
            if quirk == "shared-module" and i == 0:
                h = self.mid(h)  # weights used between two layers
            if quirk == "mixed-hidden":
                h = h * 2  # what the next layer gets is not what this one returned
            if quirk == "data-dependent" and float(h.sum()) > 0:  # needs values: cannot run on meta
                h = -h
        return CausalLMOutputWithPast(logits=self.head(h))


AutoConfig.register("tessera-odd", OddConfig, exist_ok=True)
AutoModelForCausalLM.register(OddConfig, OddForCausalLM, exist_ok=True)


@pytest.mark.parametrize("quirk, reason", [
    ("twin-lists", r"cannot tell which module list holds the 3 decoder layers of OddForCausalLM \(candidates: "
                   r"\['layers', 'twins'\]\)"),
    ("reversed", "OddForCausalLM does not run its 3 layers once each in order"),
    ("shared-module", "module mid of OddForCausalLM runs between or on both sides of the decoder layers"),
    ("mixed-hidden", "OddForCausalLM changes the hidden states between decoder layers"),
    ("data-dependent", "cannot trace OddForCausalLM's forward to find its stages"),
])
def test_a_structure_that_cannot_be_cut_is_refused(home, tmp_path, quirk, reason):
    torch.manual_seed(0)
    OddForCausalLM(OddConfig(quirk=quirk)).save_pretrained(tmp_path / quirk)
    with pytest.raises(ModelError, match=reason):
        store.import_dir(tmp_path / quirk)


def test_a_config_transformers_cannot_build_is_refused(home, tmp_path):
    d = tmp_path / "gemma3n"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gemma3n_text", "hidden_size": 64, "num_hidden_layers": 4,
                                               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                                               "vocab_size": 256, "intermediate_size": 128}))
    save_file({"x": torch.zeros(1)}, d / "model.safetensors")
    with pytest.raises(ModelError, match="transformers cannot build model_type 'gemma3n_text' from this config.json"):
        store.import_dir(d)


def test_incomplete_checkpoints_are_refused(tmp_path):
    d = save_tiny_model("llama", tmp_path / "llama")
    sd = load_file(d / "model.safetensors")
    save_file({k: v for k, v in sd.items() if not k.startswith("model.layers.2.")}, d / "model.safetensors")
    with pytest.raises(ModelError, match=r"lacks the weights of blocks \[2\]"):
        stage_layout(d)
    save_file({k: v for k, v in sd.items() if k != "lm_head.weight"}, d / "model.safetensors")
    with pytest.raises(ModelError, match="has no lm_head.weight and no tensor it is tied to"):
        stage_layout(d)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    d = save_tiny_model("llama", tmp_path / "llama")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    with pytest.raises(ModelError, match="stage weights do not fit the model: .*mlp"):
        load_stage(d, 1, 2)
