"""Digits CNN/ViT: trained reproducibly, sharded with torch.fx, same class ids as the whole model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from proto.errors import JobError
from worker import store
from worker.shard import load_full, load_stage
from worker.shard.fx import register_architecture
from worker.vision import decode_images, digits_test_split, encode_images
from worker.vision.train import RECIPES, train

torch.set_num_threads(2)

SPLITS = [[(0, 1), (1, 4)], [(0, 2), (2, 4)], [(0, 3), (3, 4)], [(0, 1), (1, 2), (2, 3), (3, 4)]]


@pytest.fixture(scope="session", params=["digits-cnn", "digits-vit"])
def vision(request):
    return store.fetch(request.param).directory


@pytest.fixture(scope="module")
def test_split():
    return digits_test_split()


def test_whole_model_is_trained(vision, test_split):
    x, y = test_split
    assert x.shape == (360, 1, 8, 8) and y.shape == (360,)
    acc = float((load_full(vision)(x).argmax(-1) == y).float().mean())
    assert acc >= 0.93
    assert json.loads((vision / "config.json").read_text())["training"]["test_accuracy"] == round(acc, 4)


@pytest.mark.parametrize("spans", SPLITS, ids=lambda s: "|".join(f"{a}-{b}" for a, b in s))
def test_sharded_model_gives_the_same_class_ids(vision, test_split, spans):
    x, _ = test_split
    with torch.no_grad():
        ref = load_full(vision)(x)
    h = decode_images(encode_images(x))  # through the canonical job input bytes
    for s, e in spans:
        stage = load_stage(vision, s, e)
        assert stage.new_cache() is None and stage.spec.kind == "classifier"
        h = stage(h)
    assert torch.equal(h.argmax(-1), ref.argmax(-1))
    assert torch.equal(h, ref)


def test_vision_stage_hashes_verify(vision):
    m = store.load_manifest(vision)
    assert (m.family, m.num_blocks, m.kind) == ("fx", 4, "classifier")
    assert set(store.verify_span(m, 0, 4, m.weights_root)) == {"input", "block.0", "block.1", "block.2",
                                                             "block.3", "output"}


def test_cnn_training_is_reproducible():
    d = store.fetch("digits-cnn").directory
    model, _ = train(RECIPES["digits-cnn"])
    stored = load_file(d / "model.safetensors")
    assert all(torch.equal(v, stored[k]) for k, v in model.state_dict().items())


def test_image_bytes_roundtrip_and_refusals(test_split):
    x, _ = test_split
    data = encode_images(x[:5])
    assert len(data) == 5 * 64 and torch.equal(decode_images(data), x[:5])
    for bad in (b"", b"\x00" * 63, bytes([17]) * 64):
        with pytest.raises(JobError):
            decode_images(bad)
    with pytest.raises(JobError):
        encode_images(x[:1] + 0.5)


@register_architecture("test-seq")
def _seq(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(64, 64), nn.Linear(64, 64)])

    def forward(self, x):
        x = x.flatten(1)
        return self.blocks[1](self.blocks[0](x)) + x  # x crosses the cut before block 1 beside block 0's output


register_architecture("test-skip")(_Skip)


def _save(tmp_path, arch: str, model: nn.Module) -> str:
    d = tmp_path / arch
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"tessera_arch": arch}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, d / "model.safetensors")
    return d


def test_any_sequential_model_is_cut_at_its_children(tmp_path, test_split):
    torch.manual_seed(0)
    d = _save(tmp_path, "test-seq", _seq())
    x, _ = test_split
    ref = load_full(d)(x)
    h = x
    for s, e in [(0, 1), (1, 3), (3, 4)]:
        h = load_stage(d, s, e)(h)
    assert torch.equal(h, ref)


def test_a_skip_across_a_cut_travels_beside_the_main_tensor(tmp_path, test_split):
    torch.manual_seed(0)
    d = _save(tmp_path, "test-skip", _Skip())
    x, _ = test_split
    mid = load_stage(d, 0, 1)(x)
    assert isinstance(mid, tuple) and len(mid) == 2 and torch.equal(mid[1], x.flatten(1))
    assert torch.equal(load_stage(d, 1, 2)(mid), load_full(d)(x))
