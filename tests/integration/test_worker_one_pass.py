"""One-pass kinds over real gRPC between `tessera operator run --plan-file` processes: a residual user
model whose skips cross the cuts (extra activations on the wire) at 2 and 3 stages, and MiniLM
embeddings at 3 stages, give exactly the unsplit model's class ids and embedding grid words."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.models_rows import one_pass_multi_process  # noqa: E402
from proto.types import embedding_words  # noqa: E402
from worker import store  # noqa: E402
from worker.node.payload import head_inputs  # noqa: E402
from worker.sampling import argmax_classes  # noqa: E402
from worker.shard import load_full  # noqa: E402
from worker.shard.tiny import TinyResNet, tiny_resnet  # noqa: E402
from worker.store.user import import_factory, import_program  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("how", ["factory", "program"])
def test_a_residual_user_model_runs_exactly_across_processes(tmp_path, how):
    model = tiny_resnet(seed=5)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))  # a batch of 3 images
    if how == "program":
        torch.export.save(torch.export.export(model, (x,)), tmp_path / "r.pt2")
        d = import_program(tmp_path / "r.pt2", name="r").directory
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
        d = import_factory(f"{TinyResNet.__module__}:TinyResNet", tmp_path / "w.safetensors", "r",
                           [3, 3, 8, 8]).directory
    with torch.no_grad():
        want = argmax_classes(model(x))
    for parts in (2, 3):
        (tmp_path / f"procs{parts}").mkdir()
        assert one_pass_multi_process(d, tmp_path / f"procs{parts}", x, "classifier", 4, parts) == want


def test_minilm_embeds_exactly_across_three_processes(tmp_path):
    d = store.fetch("minilm-l6").directory
    ids = head_inputs("embedding", d, "Sharded sentence embeddings, verified by their replicas.".encode())
    want = embedding_words(load_full(d)(torch.tensor([ids])).flatten().tolist())
    (tmp_path / "procs").mkdir()
    assert one_pass_multi_process(d, tmp_path / "procs", ids, "embedding", 6, 3) == want
