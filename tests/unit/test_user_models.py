"""User models (no Hugging Face config): a torch.export program or a module:factory with safetensors
weights, imported through the CLI, cut into blocks with the tensors that skip across a cut carried
beside the main one, each split exactly the unsplit model; untraceable models refused with the reason."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

from proto.errors import JobInputError, ModelError
from tessera.cli.main import cli
from worker import store
from worker.node.payload import decode_tensor, encode_tensor, head_inputs
from worker.shard import load_full, load_stage, stage_layout
from worker.shard.tiny import TinyResNet, tiny_resnet
from worker.store.user import import_factory, import_program

SPLITS = {2: [(0, 2), (2, 4)], 3: [(0, 1), (1, 3), (3, 4)]}
FACTORY = f"{TinyResNet.__module__}:{TinyResNet.__qualname__}"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    torch.set_num_threads(1)


@pytest.fixture
def resnet(tmp_path):
    model = tiny_resnet(seed=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 8, 8),)), tmp_path / "resnet.pt2")
    return model, tmp_path


def _run(model_dir, spans, x):
    outs = []
    for a, b in spans:
        x = load_stage(model_dir, a, b)(x)
        outs.append(x)
    return outs


def test_cli_imports_a_factory_and_a_program_and_both_split_exactly(resnet):
    model, d = resnet
    runner = CliRunner()
    res = runner.invoke(cli, ["model", "import", FACTORY, "--weights", str(d / "w.safetensors"),
                              "--input-shape", "2,3,8,8", "--name", "resnet-f", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["input"] == {"shape": [2, 3, 8, 8], "dtype": "float32"}
    res = runner.invoke(cli, ["model", "import", str(d / "resnet.pt2"), "--name", "resnet-p", "--json"])
    assert res.exit_code == 0, res.output
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)
    for name in ("resnet-f", "resnet-p"):
        m = store.load_manifest(name)
        assert (m.kind, m.family, m.num_blocks) == ("classifier", "fx", 4)
        assert torch.equal(load_full(m.directory)(x), want)
        for parts, spans in SPLITS.items():
            outs = _run(m.directory, spans, x)
            assert torch.equal(outs[-1], want), (name, parts)
        # the cut before block 1 is crossed by block 0's output (primary), the raw input and the stem's output
        first = _run(m.directory, [(0, 1)], x)[0]
        assert isinstance(first, tuple) and [t.shape[1] for t in first] == [8, 3, 8]
        assert torch.equal(first[1], x)
        assert set(store.verify_span(m, 0, 4, m.weights_root)) == {"input", "output", *(f"block.{i}" for i in range(4))}


def test_a_program_is_committed_to_and_refused_when_changed(resnet):
    _, d = resnet
    m = import_program(d / "resnet.pt2", name="r")
    cfg = json.loads((m.directory / "config.json").read_text())
    assert cfg["tessera_program"] == "program.pt2" and cfg["tessera_program_hash"].startswith("0x")
    with open(m.directory / "program.pt2", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="does not match tessera_program_hash"):
        load_stage(m.directory, 0, 2)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x):
        x = self.blocks[0](x)
        if x.sum() > 0:  # control flow on a value: no single graph
            x = -x
        return self.blocks[1](x)


class SizeAcross(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x):
        n = x.shape[0]  # an int from the input stage, used by the output stage
        return self.blocks[1](self.blocks[0](x)).reshape(n, -1)


@pytest.mark.parametrize("cls, reason", [
    (Branchy, r"torch.fx cannot trace Branchy.forward \(TraceError: .*\); a model whose control "
                              r"flow depends on tensor values"),
    (SizeAcross, r"does not run when cut into 2 stages .*only tensors may cross a cut"),
])
def test_models_that_cannot_be_cut_are_refused_with_the_reason(tmp_path, cls, reason):
    save_file(cls().state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match=reason):
        import_factory(f"{cls.__module__}:{cls.__qualname__}", tmp_path / "w.safetensors", "m", [2, 4])
    assert not list((tmp_path / "home" / "models").iterdir())


def test_factory_import_refusals(tmp_path, resnet):
    _, d = resnet
    with pytest.raises(ModelError, match="cannot load the model factory 'no.such.module:f'"):
        import_factory("no.such.module:f", d / "w.safetensors", "x", [2, 3, 8, 8])
    save_file({"stem.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "partial.safetensors")
    with pytest.raises(ModelError, match="checkpoint lacks"):
        import_factory(FACTORY, tmp_path / "partial.safetensors", "x", [2, 3, 8, 8])
    res = CliRunner().invoke(cli, ["model", "import", FACTORY, "--name", "x"])
    assert res.exit_code != 0 and "needs --weights FILE, --input-shape" in res.output


def test_job_input_is_the_raw_tensor_of_the_stated_shape(resnet):
    _, d = resnet
    m = import_program(d / "resnet.pt2", name="r")
    x = torch.randn(2, 3, 8, 8)
    got = head_inputs("classifier", m.directory, encode_tensor(x))
    assert torch.equal(got, x) and len(encode_tensor(x)) == 2 * 3 * 8 * 8 * 4
    with pytest.raises(JobInputError, match=r"has 4 bytes; this model takes one torch.float32 tensor of shape \[2, 3"):
        head_inputs("classifier", m.directory, b"\0" * 4)
    with pytest.raises(JobInputError, match="NaN or Inf"):
        decode_tensor(encode_tensor(torch.tensor([float("nan")])), (1,), torch.float32)
    assert stage_layout(m.directory).num_blocks == 4
