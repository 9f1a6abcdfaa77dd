"""Stages honour ``device``: on a GPU (when present) they match the unsplit model on that GPU."""

from __future__ import annotations

import pytest
import torch

from worker.quant import resident_bytes
from worker.shard import load_full, load_stage
from worker.shard.tiny import save_tiny_model

torch.set_num_threads(2)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_stages_on_gpu_match_the_full_model_on_gpu(family, dtype, tmp_path):
    d = save_tiny_model(family, tmp_path)
    full = load_full(d, device="cuda", dtype=dtype)
    stages = [load_stage(d, s, e, device="cuda", dtype=dtype) for s, e in [(0, 1), (1, 3), (3, 4)]]
    assert all(p.device.type == "cuda" and p.dtype == dtype for s in stages for p in s.parameters())
    prompt = torch.randint(3, 256, (1, 10), generator=torch.Generator().manual_seed(0))
    caches = [s.new_cache() for s in stages]
    x, got = prompt, []
    for _ in range(16):
        for s, c in zip(stages, caches):
            x = s(x, c)
        x = x[:, -1].argmax(-1, keepdim=True)
        got.append(int(x))
    want = full.generate(prompt.cuda(), max_new_tokens=16, min_new_tokens=16, do_sample=False)[0, 10:]
    assert got == want.tolist()


def test_int8_stage_on_gpu(tmp_path):
    d = save_tiny_model("llama", tmp_path)
    ids = torch.randint(3, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    fp = load_stage(d, 0, 4, device="cuda")(ids)
    q8 = load_stage(d, 0, 4, device="cuda", weights="int8-mixed")
    assert (q8(ids) - fp).norm() / fp.norm() < 0.05
    assert resident_bytes(q8) < resident_bytes(load_stage(d, 0, 4, device="cuda"))


def test_vision_stages_on_gpu(tmp_path):
    import json

    from safetensors.torch import save_file

    from worker.vision import digits_test_split
    from worker.vision.models import DigitsViT

    torch.manual_seed(0)
    d = tmp_path / "vit"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"tessera_arch": "digits-vit", "tessera_blocks": "blocks",
                                               "tessera_builder": "worker.vision.models:DigitsViT"}))
    save_file(DigitsViT().state_dict(), d / "model.safetensors")
    x, _ = digits_test_split()
    ref = load_full(d, device="cuda")(x.cuda())
    h = x
    for s, e in [(0, 2), (2, 4)]:
        h = load_stage(d, s, e, device="cuda")(h)
    assert h.device.type == "cuda" and torch.equal(h.argmax(-1), ref.argmax(-1))
