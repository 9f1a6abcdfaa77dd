"""The evaluation report writer and bench.all's plumbing (pure parts, synthetic results)."""

import json
from argparse import Namespace

import pytest

from bench import hop
from bench._out import summarize
from bench.all import card_slug, cpu_steps, select
from bench.eval.report import render, table
from bench.eval.report_disagree import conclusions
from bench.plots import make_all


def pair(differ_steps, margins, prompts=4, steps=32, all_q=(0.02, 0.1, 1.5), below=0.01):
    return {"prompts": prompts, "steps": steps, "differ": len(differ_steps),
            "differ_frac": len(differ_steps) / prompts, "first_steps": differ_steps,
            "first_step_median": sorted(differ_steps)[len(differ_steps) // 2] if differ_steps else None,
            "ref_margin_at_divergence": margins, "other_margin_at_divergence": margins,
            "ref_margin_at_divergence_q": {"p50": (sorted(margins)[len(margins) // 2] if margins else None),
                                           "p90": max(margins, default=None), "p100": max(margins, default=None)},
            "ref_margin_all_steps_q": dict(zip(("p1", "p5", "p50"), all_q)),
            "steps_below_max_divergence_margin": below if differ_steps else 0.0}


def disagree(pairs, device_name="cpu", prompts=4):
    return {"bench": "disagree", "model": "smollm2-135m", "device": "cpu", "device_name": device_name,
            "prompts": prompts, "tokens": 32, "prompt_examples": ["An example prompt"],
            "reference": {"name": "fp32", "dtype": "fp32", "threads": 1, "device": "cpu"},
            "ref_prompts_with_margin_below": {"0.1": 0.5}, "pairs": pairs}


def test_conclusions_follow_the_numbers():
    d = disagree({"fp32-2threads": pair([], []), "bf16": pair([5, 20], [0.031, 0.125]), "fp16": pair([], [])})
    d["pairs"]["fp32-2threads"]["margin_drift_max"] = 0.0
    d["pairs"]["fp16"]["margin_drift_max"] = 0.002
    text = "\n".join(conclusions(d))
    assert "prompts with bitwise-equal top-two margins" in text
    assert "not bitwise equal (top-two margins differ by up to 0.002)" in text
    assert "**fp32-2threads**: the same 32 token ids as the reference on all 4 prompts" in text
    assert "2/4 prompts (50%) differ" in text and "at most 0.125" in text
    assert "up to 50% of these jobs (worst: bf16" in text
    assert "fp32-2threads, fp16 agreed with the reference on every prompt" in text


def test_conclusions_without_any_divergence_do_not_claim_one():
    text = "\n".join(conclusions(disagree({"bf16": pair([], [])}, prompts=50)))
    assert "none of the honest variations changed a token id" in text
    assert "about 6.0% (95%)" in text  # 3 / 50: the rule-of-three bound on the per-job rate
    assert "declared an honest replica wrong" not in text


def test_a_diverging_lossless_control_is_flagged():
    text = "\n".join(conclusions(disagree({"fp32-3cut-fp32codec": pair([3], [0.5])})))
    assert "Warning" in text


def test_render_reports_missed_targets_missing_parts_and_gpu_runs(tmp_path):
    res = {"gas": {"total": 700_000, "target": 600_000, "meets_target": False, "withdraw_earnings_per_node": 38_000},
           "disagree-cpu": disagree({"bf16": pair([2], [0.01])}),
           "disagree-gpu-nvidia-h100": disagree({"fp32-cpu": pair([], [])}, device_name="NVIDIA H100 80GB HBM3"),
           "pipeline-cpu": {"model": "m", "tokens": 8, "prompt_tokens": 4, "codec": "int8-outlier", "repeats": 1,
                            "thread_budget": "1 thread", "target": "3 stages >= 0.85 of monolithic", "target_met": False,
                            "stages": {"3": {"tokens_per_s": 8.0, "monolithic_tokens_per_s": 10.0, "vs_monolithic": 0.8,
                                             "same_tokens_as_monolithic": 1.0}},
                            "meta": {"command": "python -m bench.pipeline --json", "seconds": 3.0, "date": "d",
                                     "machine": {"cpu": "Test CPU", "cores": 2, "torch": "9.9"}}}}
    md = render(res, [], tmp_path)
    assert "total 700,000 gas, target 600,000: **MISSED**" in md
    assert "Target (3 stages >= 0.85 of monolithic): **MISSED**" in md
    assert "`bench/results/codec-cpu.json` is missing" in md and "`bench/results/routing.json` is missing" in md
    assert "## GPU: honest disagreement on NVIDIA H100 80GB HBM3" in md and "No GPU results yet" not in md
    assert "Test CPU (2 cores), torch 9.9" in md
    assert "1/4 (25%)" in md


def test_render_without_gpu_says_how_to_get_it(tmp_path):
    assert "python -m bench.all --device cuda" in render({}, [], tmp_path)


def test_plots_draw_from_results_and_name_their_sources(tmp_path):
    res = {"gas-replicas": {"rows": [{"replicas": r, "calls": {"submitJob": 100_000 * r, "finalize": 50_000}, "total": 0}
                                     for r in (1, 3)]},
           "disagree-cpu": disagree({"bf16": pair([2], [0.01])})}
    figs = make_all(res, tmp_path)
    assert sorted(f.sources for f in figs) == [("disagree-cpu",), ("gas-replicas",)]
    assert all(f.path.stat().st_size > 1000 and f.path.read_bytes()[:4] == b"\x89PNG" for f in figs)


def test_table_formats_cells():
    assert table(["a", "b"], [[1.23456789, None]]) == "| a | b |\n|---|---|\n| 1.235 | – |"


def test_only_reruns_the_timings_in_one_command_and_rejects_unknown_names():
    steps = cpu_steps(Namespace(quick=False, codec_tokens=2048, prompts=50, tokens=32))
    assert [s.stem for s in select(steps, "routing,pipeline-cpu,hop-cpu", None)] == ["pipeline-cpu", "hop-cpu", "routing"]
    assert "gas" not in [s.stem for s in select(steps, None, "gas")]
    with pytest.raises(SystemExit, match="unknown result stem.*pipline-cpu"):
        select(steps, "pipline-cpu", None)


def pipeline(meta: dict, **stage3) -> dict:
    return {"model": "m", "tokens": 8, "prompt_tokens": 4, "codec": "int8-outlier", "repeats": 3,
            "thread_budget": "1 thread", "target": "3 stages >= 0.85 of monolithic", "target_met": True,
            "stages": {"3": stage3}, "meta": meta}


def test_render_says_which_timings_predate_provenance_and_what_is_pending(tmp_path):
    machine = {"cpu": "Test CPU", "cores": 2, "torch": "9.9"}
    old = {"command": "python -m bench.pipeline --json", "seconds": 3.0, "date": "d", "machine": machine}
    new = {**old, "commit": "0123456789abcdef", "dirty": True, "dirty_files": ["bench/hop.py"], "dirty_count": 1}
    runs = {"tokens_per_s": [9.0, 8.0, 8.5], "monolithic_tokens_per_s": [10.0, 9.0, 9.5],
            "vs_monolithic": [0.9, 0.86, 0.89], "same_tokens_as_monolithic": [1.0, 1.0, 1.0]}

    md = render({"pipeline-cpu": pipeline(old, tokens_per_s=8.0, monolithic_tokens_per_s=9.0, vs_monolithic=0.89,
                                          same_tokens_as_monolithic=1.0)}, [], tmp_path)
    assert "0.89 of monolithic at 3 stages; stale until rerun (predates provenance)" in md
    assert "Rerun on a quiet machine: `python -m bench.all --only pipeline-cpu,hop-cpu,routing`" in md
    assert "headline rule not recorded" in md and "commit `" not in md
    assert "pipeline throughput on an H100 and an H200 GPU: pending a rerun" in md
    assert "median** of their runs" in md

    md = render({"pipeline-cpu": {**pipeline(new, **summarize(runs)), "headline": "median"},
                 "pipeline-gpu-nvidia-h200": pipeline(new, **summarize(runs)),
                 "pipeline-cpu-gpuhost": pipeline(new, **summarize(runs))}, [], tmp_path)
    assert "stale" not in md and "Pending reruns" not in md
    assert "| 3 | 8.5 | 9.5 | 0.89 | 0.9, 0.86, 0.89 | 1 |" in md
    assert ("| `pipeline-cpu` | `python -m bench.pipeline --json` at commit `0123456789` (uncommitted changes in "
            "`bench/hop.py`) on Test CPU (2 cores), torch 9.9, 3 s, d | – |") in md


def test_card_slug():
    assert card_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_hop_bench_times_every_piece_and_the_report_shows_them(tmp_path, capsys):
    assert hop.main(["--repeats", "4", "--sweep-mb", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["wire_bytes"] > 0 and set(res["pieces"]) >= {"encode", "verify signature", "check payload hash + decode"}
    assert all(v["warm_us"] > 0 and v["cold_us"] > 0 for v in res["pieces"].values())
    md = render({"hop-cpu": res, "pipeline-cpu": {"model": "m", "tokens": 8, "prompt_tokens": 4, "codec": "int8-outlier",
                                                  "repeats": 1, "thread_budget": "1 thread", "stages": {}}}, [], tmp_path)
    assert "| verify signature |" in md and "right after sweeping 1 MB" in md
