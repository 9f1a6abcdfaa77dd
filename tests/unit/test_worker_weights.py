"""``[worker] weights``: an operator can serve int8-mixed blocks from node.toml or the command line."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from proto.errors import ConfigError
from tessera.cli.main import cli
from worker import server
from worker.config import WorkerConfig
from worker.quant import Int8MixedLinear, resident_bytes
from worker.shard.tiny import save_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("llama"))


def test_int8_mixed_weights_are_loaded_when_configured(tiny):
    fp = server.load_stage(WorkerConfig.build(model_dir=str(tiny), start=1, end=3))
    q8 = server.load_stage(WorkerConfig.build(model_dir=str(tiny), start=1, end=3, weights="int8-mixed"))
    assert not any(isinstance(m, Int8MixedLinear) for m in fp.modules())
    assert sum(isinstance(m, Int8MixedLinear) for m in q8.modules()) == 2 * 7  # q, k, v, o, gate, up, down
    assert resident_bytes(q8) < 0.5 * resident_bytes(fp)
    x = torch.randn(1, 5, 64, generator=torch.Generator().manual_seed(0))
    ref, got = fp(x), q8(x)
    assert (got - ref).norm() / ref.norm() < 0.05


def test_an_unknown_weight_format_is_refused():
    assert WorkerConfig.build(weights="int8-mixed").weights == "int8-mixed"
    with pytest.raises(ConfigError, match="weights"):
        WorkerConfig.build(weights="int4")


def test_operator_run_has_the_flag():
    out = CliRunner().invoke(cli, ["operator", "run", "--help"])
    assert out.exit_code == 0 and "--weights" in out.output and "int8-mixed" in out.output
