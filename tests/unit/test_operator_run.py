"""`tessera operator run`: one flag per WorkerConfig field, a fast --help, a clear usage error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proto.errors import ConfigError
from tessera.cli.main import main
from tessera.cli.operator_run import run
from worker.config import WorkerConfig
from worker.server import load_stage


def _flags(argv: list[str]) -> dict:
    ctx = run.make_context("run", argv)
    return {k: v for k, v in ctx.params.items() if k not in ("config_path", "plan_file", "log_format")}


def test_every_worker_setting_is_a_flag_and_flags_left_out_keep_the_defaults():
    flags = _flags(["--plan-file", "plan.json", "--session-ttl-s", "7.5", "--byzantine", "--end", "3",
                    "--loader", "tests/x.py:load", "--model-dir", "/m"])
    assert set(flags) == set(WorkerConfig.model_fields)
    cfg = WorkerConfig.build(**flags)
    assert (cfg.session_ttl_s, cfg.byzantine, cfg.end, cfg.loader, cfg.model_dir) == (7.5, True, 3, "tests/x.py:load",
                                                                                       "/m")
    assert cfg.port == WorkerConfig().port and cfg.max_sessions == WorkerConfig().max_sessions
    assert WorkerConfig.build(**_flags(["--no-byzantine"])).byzantine is False


def test_a_flag_value_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="port"):
        WorkerConfig.build(**_flags(["--port", "70000"]))


def test_help_lists_every_setting_without_loading_torch_grpc_or_web3():
    code = ("import sys, contextlib, io\n"
            "from tessera.cli.main import main\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    assert main(['operator', 'run', '--help']) == 0\n"
            "print(sorted(m for m in ('torch', 'grpc', 'web3', 'transformers') if m in sys.modules))\n"
            "print(out.getvalue())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("[]\n"), out[:200]
    for name, field in WorkerConfig.model_fields.items():
        assert "--" + name.replace("_", "-") in out
    assert "--plan-file" in out and "--config" in out


def test_run_needs_a_config_or_a_plan(capsys):
    assert main(["operator", "run", "--port", "0"]) == 2
    assert "--config node.toml" in capsys.readouterr().err


def test_a_loader_that_cannot_be_imported_is_a_config_error(tmp_path):
    cfg = WorkerConfig(model_dir=str(tmp_path), end=2, loader="no_such_module_here:load")
    with pytest.raises(ConfigError, match="module:function"):
        load_stage(cfg)
