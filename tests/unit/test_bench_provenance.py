"""Every benchmark result carries where it came from, and repeated runs report their median."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from bench import hop, routing
from bench._out import HEADLINE, emit, summarize
from bench.provenance import REPO, command_line, dirty_files, git_state, host_class, process_seconds


def _git(cwd, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30).stdout


def test_emit_records_commit_tree_machine_command_and_keeps_the_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench/pipeline.py", "--tokens", "8", "--json"])
    runs = {"tokens_per_s": [14.0, 16.5, 15.1], "vs_monolithic": [0.8, 0.9, 0.86]}
    save = tmp_path / "pipeline-cpu.json"
    assert emit({"bench": "x", "headline": HEADLINE, "stages": {"3": summarize(runs)}}, str(save), True) == 0

    saved = json.loads(save.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == saved
    m = saved["meta"]
    assert m["commit"] == _git(REPO, "rev-parse", "HEAD").strip()
    assert isinstance(m["dirty"], bool) and m["dirty"] == bool(m["dirty_files"])
    assert m["command"].endswith("--tokens 8 --json")
    assert {"cpu", "cores", "ram_gib", "torch", "transformers", "host"} <= set(m["machine"])
    assert m["machine"]["ram_gib"] > 0 and m["seconds"] > 0 and m["date"].endswith("UTC")
    row = saved["stages"]["3"]
    assert row["runs"] == runs  # every run kept, in order
    assert row["tokens_per_s"] == 15.1 and row["vs_monolithic"] == 0.86  # the medians, not the best
    assert summarize({"x": [3.18, 4.6]})["x"] == 3.89  # an even count: the mean of the middle two
    assert not list(tmp_path.glob("*.tmp"))


def test_hop_and_routing_headlines_are_the_median_of_the_runs_they_keep(tmp_path, capsys):
    save = tmp_path / "hop-cpu.json"
    assert hop.main(["--repeats", "6", "--sweep-mb", "1", "--json", "--save", str(save)]) == 0
    res = json.loads(save.read_text())
    assert res["headline"] == "median" and res["meta"]["commit"]
    for piece in res["pieces"].values():
        assert len(piece["runs"]["warm_us"]) == 6 and len(piece["runs"]["cold_us"]) == 5
        assert piece["warm_us"] == pytest.approx(statistics.median(piece["runs"]["warm_us"]), abs=1e-9)
        assert piece["cold_us"] == pytest.approx(statistics.median(piece["runs"]["cold_us"]), abs=1e-9)

    t = routing.timing(120, 12, 1, 4)
    assert len(t["runs_ms"]) == 4 and t["median_ms"] == pytest.approx(statistics.median(t["runs_ms"]), abs=1e-9)
    assert t["p95_ms"] == max(t["runs_ms"])


def test_git_state_names_changed_code_but_not_benchmark_outputs(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = _git(tmp_path, "rev-parse", "HEAD").strip()
    (tmp_path / "bench" / "results" / "gas.json").write_text("{}")
    assert git_state(tmp_path) == {"commit": head, "dirty": False, "dirty_files": [], "dirty_count": 0}
    (tmp_path / "code.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("")
    st = git_state(tmp_path)
    assert st["dirty"] is True and st["dirty_files"] == ["code.py", "new.py"]
    assert git_state(tmp_path / "bench")["commit"] == head  # any folder of the checkout
    assert git_state(tmp_path.parent)["commit"] is None  # not a checkout: unknown, not invented


def test_pure_helpers():
    assert dirty_files(" M bench/pipeline.py\n?? bench/results/x.json\nR  a.py -> b.py\n M bench/REPORT.md\n") == \
        ["bench/pipeline.py", "b.py"]
    assert command_line(["/repo/bench/routing.py", "--runs", "3"], "bench.routing") == "python -m bench.routing --runs 3"
    assert command_line(["/venv/bin/tessera", "bench", "gas"], None) == "tessera bench gas"
    assert host_class("GPU-Node-17.cluster.example") == "gpu-node-N"
    stat = "4242 (python -m x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 500 19"  # starttime: 500 ticks
    assert process_seconds(stat, "12.5 3.0", 100) == 7.5
