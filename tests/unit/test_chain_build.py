"""The one contract build: forge, settings in foundry.toml, rebuilt when a source changes (no chain)."""

from __future__ import annotations

import json
import shutil

import pytest

from chain import build
from proto.paths import REPO_ROOT


@pytest.fixture
def contracts_copy(tmp_path, monkeypatch):
    """A copy of contracts/ with a warm forge cache, which build() and load_artifact() then use."""
    build.load_artifact("JobMarket")  # the checkout's build is current, so the copy's cache is warm
    root = tmp_path / "repo"
    shutil.copytree(build.CONTRACTS_DIR, root / "contracts", ignore=shutil.ignore_patterns("*.t.sol", "build.lock"))
    (root / "node_modules").symlink_to(REPO_ROOT / "node_modules")  # solc-shim finds solcjs here
    monkeypatch.setattr(build, "CONTRACTS_DIR", root / "contracts")
    return root / "contracts"


def names(art: dict) -> set[str]:
    return {e.get("name") for e in art["abi"]}


def test_artifacts_are_forges_in_the_documented_place():
    art = build.load_artifact("JobMarket")
    path = REPO_ROOT / "contracts" / "out" / "JobMarket.sol" / "JobMarket.json"  # examples/requester.py reads it
    assert json.loads(path.read_text()) == art
    assert art["bytecode"]["object"].startswith("0x") and "submitJob" in names(art)
    assert {"arm", "forward"} <= names(build.load_artifact("ReentrantPayout"))  # test helpers build too


def test_load_rebuilds_only_when_a_source_changed(contracts_copy, monkeypatch):
    real_build = build.build

    def no_build(force=False):
        raise AssertionError("built although nothing changed")

    monkeypatch.setattr(build, "build", no_build)
    before = build.load_artifact("ReentrantPayout")
    src = contracts_copy / "test" / "ReentrantPayout.sol"
    text = src.read_text().rstrip()
    assert text.endswith("}")
    src.write_text(text[:-1] + "    function buildProbe() external pure returns (uint256) { return 7; }\n}\n")
    with pytest.raises(AssertionError, match="although nothing changed"):
        build.load_artifact("ReentrantPayout")  # the edit is seen without running forge
    monkeypatch.setattr(build, "build", real_build)
    after = build.load_artifact("ReentrantPayout")
    assert "buildProbe" in names(after) - names(before)
    assert after["bytecode"]["object"] != before["bytecode"]["object"]
