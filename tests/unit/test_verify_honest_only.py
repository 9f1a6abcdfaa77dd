"""bench.verify's honest-only options: which mixes run and which tolerances judge them (no model loads)."""

from __future__ import annotations

import json

import pytest

from bench import verify
from bench.eval.verify_cal import tolerances_from
from bench.eval.verify_lab import honest_mixes, select_mixes
from worker.verify.spec import TOLERANCES, Tolerance


def test_mixes_are_filtered_by_name_in_study_order_and_unknown_names_are_refused():
    mixes = honest_mixes("cuda")
    got = select_mixes(mixes, "bf16-cuda-3hop, fp32-3hop,fp32-cuda-3hop")
    assert [m.name for m in got] == ["fp32-3hop", "fp32-cuda-3hop", "bf16-cuda-3hop"]
    assert [m.device for m in got] == ["cpu", "cuda", "cuda"]
    assert select_mixes(mixes, None) == mixes
    with pytest.raises(ValueError, match="fp32-cuda-3hop"):  # names the known mixes, the cuda ones too
        select_mixes(mixes, "fp32-3hop,fp32-tpu-3hop")
    with pytest.raises(ValueError, match="unknown mix fp32-cuda-3hop"):  # a CPU run has no cuda mixes
        select_mixes(honest_mixes("cpu"), "fp32-cuda-3hop")


def test_tolerances_come_from_the_code_or_from_an_earlier_results_calibration(tmp_path):
    assert tolerances_from("code") == TOLERANCES
    tol = {"fp_median": 1e-3, "fp_p90": 1e-2, "growth": 30.0, "token_gap": 0.01}
    result = tmp_path / "verify.json"
    result.write_text(json.dumps({"calibration": {"fp32/lossy": {"runs": 3, "tolerance": tol}}}))
    assert tolerances_from(str(result)) == {"fp32/lossy": Tolerance(**tol)}
    (tmp_path / "bad.json").write_text(json.dumps({"honest": {}}))
    for bad in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(ValueError, match="give `code` or a bench.verify result"):
            tolerances_from(str(bad))


@pytest.mark.parametrize("argv, says", [
    (["--mixes", "fp32-3hop"], "go with --honest-only"),
    (["--tolerances", "code"], "go with --honest-only"),
    (["--honest-only", "--mixes", "fp32-cuda-3hop"], "unknown mix fp32-cuda-3hop"),
    (["--honest-only", "--tolerances", "/nonexistent.json"], "give `code`"),
    (["--honest-only", "--jobs", "0"], "--jobs must be 1..16"),
])
def test_bad_options_stop_the_run_before_any_model_loads(argv, says, monkeypatch):
    monkeypatch.setattr(verify, "resolve", lambda name: pytest.fail("a model was resolved"))
    with pytest.raises(SystemExit, match=says):
        verify.main(argv)


def test_jobs_cut_each_mix_into_runs_of_consecutive_prompts_that_cover_every_prompt_once():
    tasks = verify.slices(3, 50, 15)
    assert len(tasks) == 15 and tasks[:2] == [(0, 0, 10), (0, 10, 10)]
    for m in range(3):
        assert sorted(p for mm, o, n in tasks if mm == m for p in range(o, o + n)) == list(range(50))
    assert verify.slices(3, 2, 15) == [(m, o, 1) for m in range(3) for o in (0, 1)]  # no empty task
    assert verify.slices(3, 7, 2) == [(0, 0, 7), (1, 0, 7), (2, 0, 7)]  # fewer jobs than mixes: one task a mix
    assert verify.slices(1, 10, 4) == [(0, 0, 3), (0, 3, 3), (0, 6, 3), (0, 9, 1)]
