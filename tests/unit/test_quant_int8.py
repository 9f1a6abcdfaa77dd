"""Int8 Linear weights with 16-bit outlier features: accuracy kept, memory saved."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer

from bench.quant_report import compare_logits
from worker import store
from worker.quant import Int8MixedLinear, QuantConfig, collect_act_absmax, quantize_module, resident_bytes
from worker.shard import load_full, load_stage
from worker.shard.tiny import save_tiny_model
from worker.store.calibrate import calibrate_outliers
from worker.vision import digits_test_split

torch.set_num_threads(2)


def _planted(seed: int = 0) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(128, 64)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(64, 128, generator=g) * 0.02)
        lin.weight[:, [5, 77]] *= 60  # two outlier input features
    return lin


def test_outlier_features_are_found_and_kept_in_16_bits():
    lin = _planted()
    q = Int8MixedLinear.from_linear(lin)
    assert q.outlier_idx.tolist() == [5, 77]
    w = q.dequantized()
    assert torch.equal(w[:, [5, 77]], lin.weight[:, [5, 77]].half().float())
    body = [i for i in range(128) if i not in (5, 77)]
    err = (w[:, body] - lin.weight[:, body]).abs()
    assert (err <= q.scale[:, None] / 2 + 1e-7).all()  # round-to-nearest on the int8 grid
    assert q.q.dtype == torch.int8


def test_mixed_decomposition_beats_plain_int8_on_outliers():
    lin = _planted()
    x = torch.randn(32, 128, generator=torch.Generator().manual_seed(1))
    ref = lin(x).detach()
    mixed = Int8MixedLinear.from_linear(lin)(x)
    plain = Int8MixedLinear.from_linear(lin, cfg=QuantConfig(max_frac=0.0))(x)
    assert torch.allclose(mixed, F.linear(x, Int8MixedLinear.from_linear(lin).dequantized(), lin.bias), atol=1e-5)
    e_mixed, e_plain = (mixed - ref).norm() / ref.norm(), (plain - ref).norm() / ref.norm()
    assert e_mixed < 0.01 and e_mixed * 5 < e_plain


def test_calibration_selects_activation_outliers():
    lin = nn.Linear(16, 4)
    seq = nn.Sequential(lin)
    x = torch.randn(8, 16) * 0.5
    x[:, 3] = 20.0  # an "attention sink" style feature
    stats = collect_act_absmax(seq, lambda: seq(x))
    assert stats["0"][3] == 20.0
    quantize_module(seq, calibration=stats)
    assert seq[0].outlier_idx.tolist() == [3]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_quantized_tiny_decoder_stays_close_and_is_smaller(family, tmp_path):
    d = save_tiny_model(family, tmp_path)
    ids = torch.randint(3, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    fp, q8 = load_stage(d, 0, 4), load_stage(d, 0, 4, weights="int8-mixed")
    ref, got = fp(ids), q8(ids)
    assert (got - ref).norm() / ref.norm() < 0.05
    assert resident_bytes(q8) < resident_bytes(fp)
    assert isinstance(q8.model.lm_head, nn.Linear)  # the head stays in full precision


def test_quantized_vit_keeps_its_accuracy():
    d = store.fetch("digits-vit").directory
    x, y = digits_test_split()
    fp, q8 = load_full(d)(x), load_stage(d, 0, 4, weights="int8-mixed")(x)
    assert compare_logits(fp, q8)["top1_agreement"] >= 0.99
    assert float((q8.argmax(-1) == y).float().mean()) >= float((fp.argmax(-1) == y).float().mean()) - 0.01


def test_int8_smollm2_middle_stage_is_smaller_and_still_answers():
    d = store.fetch("smollm2-135m").directory
    tok = AutoTokenizer.from_pretrained(d)
    fp_mid, q_mid = load_stage(d, 10, 20), load_stage(d, 10, 20, weights="int8-mixed")
    assert resident_bytes(q_mid) < 0.35 * resident_bytes(fp_mid)
    stages = [load_stage(d, 0, 10), q_mid, load_stage(d, 20, 30)]
    caches = [s.new_cache() for s in stages]
    x, out = tok("The capital of France is", return_tensors="pt").input_ids, []
    for _ in range(2):
        for s, c in zip(stages, caches):
            x = s(x, c)
        x = x[:, -1].argmax(-1, keepdim=True)
        out.append(int(x))
    assert tok.decode(out) == " Paris."


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_int8_layer_runs_on_gpu():
    lin = _planted()
    x = torch.randn(4, 128)
    cpu = Int8MixedLinear.from_linear(lin)(x)
    gpu = Int8MixedLinear.from_linear(lin.cuda())(x.cuda())
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)


def test_stored_outliers_are_used_by_the_blocks_they_name(tmp_path):
    import json

    d = save_tiny_model("llama", tmp_path)
    (d / "int8_outliers.json").write_text(json.dumps({"format": 1, "layers": {"2/mlp.down_proj": [3, 7]}}))
    stage = load_stage(d, 1, 3, weights="int8-mixed")  # layers keep their absolute index in every stage
    assert stage.model.model.layers[2].mlp.down_proj.outlier_idx.tolist() == [3, 7]
    assert stage.model.model.layers[1].mlp.down_proj.outlier_idx.tolist() != [3, 7]


def test_smollm2_calibration_finds_activation_outliers():
    d = store.fetch("smollm2-135m").directory
    layers = calibrate_outliers(d)
    assert len(layers) == 30 * 7  # q, k, v, o, gate, up, down in every block
    assert sum(len(v) for v in layers.values()) > 30  # real models have |x| >= 6 features
    assert all(len(v) <= 1536 // 32 for v in layers.values())
