"""A node checks the tokenizer and config files it will use against the ModelRegistry at start-up
(issue 16, finding 17: a swapped config.json passed the weight check and changed logits by 2.6)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from chain.deploy import save_deployment
from chain.devnet import free_port
from chain.testing import funded
from worker.limits import ModelLimits
from worker.store import load_manifest
from worker.store.manifest import CONFIG_FILES, TOKENIZER_FILES

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
NODE = 7  # dev account of the node under test


def _copy_model(src: Path, dst: Path) -> None:
    """Weights linked, every small file copied (so the test may edit them)."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".safetensors":
            (dst / f.name).symlink_to(f)
        else:
            shutil.copy(f, dst / f.name)


@pytest.fixture
def node_setup(deployed, tmp_path):
    src = load_manifest("smollm2-135m")
    home = tmp_path / "home"
    model_dir = home / "models" / src.name
    _copy_model(src.directory, model_dir)
    m = load_manifest(str(model_dir))
    deployed.register_model(m.name, m.num_blocks, ModelLimits.of(model_dir).context, m.weights_root,
                            m.tokenizer_hash, m.config_hash)
    port = free_port()
    funded(deployed, NODE).register_node(m.name, 0, m.num_blocks, f"127.0.0.1:{port}", 10**18)
    dep = save_deployment(deployed.deployment, tmp_path / "deployment.json")
    cfg = tmp_path / "node.toml"
    cfg.write_text(tomli_w.dumps({
        "node": {"rpc_url": deployed.deployment.rpc_url, "deployment": str(dep), "dev_account": NODE,
                 "state_dir": str(tmp_path / "state"), "verify_weights": False},
        "worker": {"model": m.name, "start": 0, "end": m.num_blocks, "port": port, "metrics": False}}))
    return model_dir, cfg, {**os.environ, "TESSERA_HOME": str(home)}


def _start(cfg: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tessera.cli.main", "operator", "run", "--config", str(cfg)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


@pytest.mark.parametrize("edit", ["rope base changed", "one more end-of-sequence id", "tokenizer settings"])
def test_a_node_refuses_config_or_tokenizer_files_other_than_the_registered_ones(node_setup, edit):
    model_dir, cfg, env = node_setup
    if edit == "rope base changed":  # like the finding's swap: an architecture setting no weight shows
        path, key, value, what = model_dir / "config.json", "rope_parameters", {"rope_theta": 1e4, "rope_type": "default"}, "config"
    elif edit == "one more end-of-sequence id":
        path, key, value, what = model_dir / "generation_config.json", "eos_token_id", [0, 2], "config"
    else:
        path, key, value, what = model_dir / "tokenizer_config.json", "add_bos_token", True, "tokenizer"
    d = json.loads(path.read_text())
    d[key] = value
    path.write_text(json.dumps(d))
    proc = _start(cfg, env)
    assert proc.returncode != 0
    assert f"the {what} files of smollm2-135m" in proc.stderr and "not the ones registered on chain" in proc.stderr
    assert path.name in proc.stderr  # names the file set it hashed


def test_the_hashes_cover_every_file_the_tokenizer_and_generation_read():
    m = load_manifest("smollm2-135m")
    read = {f.name for f in m.directory.iterdir()} - {"model.safetensors", "manifest.json", "int8_outliers.json"}
    assert read <= set(TOKENIZER_FILES) | set(CONFIG_FILES)  # nothing the head or a stage reads is unhashed
