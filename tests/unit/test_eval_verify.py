"""The verification study's calibration, summaries and report section (pure parts, synthetic records)."""

from __future__ import annotations

from bench.eval.report import render
from bench.eval.report_verify import conclusions
from bench.eval.verify_cal import SAFETY, calibrate, growth_max, honest_summary, smallest_caught, tamper_summary


def run(verdict="honest", hop=None, chunks=((1e-7, 1e-6),) * 3, gaps=(), **kw):
    return {"verdict": verdict, "hop": hop, "reason": "r: x", "tokens": 32, "gen_s": 4.0, "verify_s": 0.4,
            "chunks": [[list(c)] for c in chunks], "gaps": [list(g) for g in gaps], **kw}


def test_calibration_scales_the_largest_honest_values_and_the_growth_past_the_tolerance():
    honest = [run(tol="fp32/lossy", chunks=((1e-7, 1e-6), (2e-7, 3e-6), (5e-7, 2e-5))),
              run(tol="bf16/lossy", chunks=((5e-3, 1e-2),) * 3, gaps=((4, 0.08),))]
    tampered = [run(tol="fp32/lossy", at=0, chunks=((5e-6, 1e-5), (1e-4, 3e-4), (3e-3, 6e-3))),
                run(tol="fp32/lossy", at=1, chunks=((1e-7, 1e-6), (1e-7, 1e-6), (1e-7, 1e-6)))]
    cal = calibrate(honest, tampered)
    f = cal["fp32/lossy"]
    assert f["honest_max"] == {"median": 5e-7, "p90": 2e-5, "token_gap": 0.0}
    assert f["tolerance"]["fp_median"] == SAFETY * 5e-7 and f["tolerance"]["fp_p90"] == SAFETY * 2e-5
    assert f["growth_max"] == 30.0  # hop 1 -> 2: 3e-3 / 1e-4 (hop 0 -> 1's 20x also passed the tolerance)
    assert f["tolerance"]["token_gap"] == 0.01  # the floor: no honest divergence to scale
    assert cal["bf16/lossy"]["tolerance"]["token_gap"] == SAFETY * 0.08 and cal["bf16/lossy"]["growth_max"] == 1.0
    assert cal["fp32/lossless"]["from"] == "fp32/lossy" and cal["fp16/lossless"]["from"] == "bf16/lossy"
    assert cal["fp16/lossy"]["tolerance"] == cal["bf16/lossy"]["tolerance"]
    assert growth_max(tampered, 1.0, 1.0) == 1.0  # nothing grew past a loose tolerance


def test_summaries_count_false_penalties_excused_ties_and_attribution():
    honest = [run(mix="m", cls="fp32", mode="greedy", gaps=((3, 0.004),)),
              run(mix="m", cls="fp32", mode="greedy", verdict="faulty", hop=2, gaps=((7, 0.5),)),
              run(mix="m", cls="fp32", mode="sampled")]
    s = honest_summary(honest)["m"]
    assert s["greedy"]["false_penalties"] == 1 and s["greedy"]["runs_with_excused_token_divergence"] == 1
    assert s["sampled"] == {**s["sampled"], "false_penalties": 0, "runs": 1}
    t = [run(kind="noise", param=p, at=1, mode="greedy", verdict=v, hop=h, output_changed=ch)
         for p, v, h, ch in ((1e-2, "faulty", 1, True), (1e-3, "faulty", 1, False), (1e-4, "faulty", 2, False),
                             (1e-5, "honest", None, False))]
    rows = tamper_summary(t, 1e-6)
    assert [(r["param"], r["detected"], r["attributed"]) for r in rows] == [(1e-2, 1, 1), (1e-3, 1, 1), (1e-4, 1, 0),
                                                                           (1e-5, 0, 0)]
    assert smallest_caught(rows) == {"1": 1e-3}
    assert rows[0]["margin"] == 0.1  # the tampered hop's chunk median 1e-7 over the tolerance 1e-6


def verify_result():
    honest = [run(mix="fp32-3hop", cls="fp32", tol="fp32/lossy", mode=m, gaps=g) for m, g in (("greedy", ()), ("sampled", ((2, 1e-3),)))]
    tampered = [run(kind="noise", param=1e-3, at=0, mode="greedy", verdict="faulty", hop=0, output_changed=False),
                run(kind="skip-block", param=5, at=1, mode="greedy", verdict="faulty", hop=2, output_changed=True)]
    rows = tamper_summary(tampered, 1e-6)
    return {"bench": "verify", "model": "smollm2-135m", "tokens": 32, "prompt_examples": ["An example"],
            "prompts": {"report": 1, "calibration": 1}, "load_average": {"start": [3.0], "end": [4.0]},
            "fingerprint": {"samples_per_chunk": 64, "chunk_steps": 32, "bytes_per_chunk_per_hop": 267},
            "calibration": calibrate(honest, []), "honest": honest_summary(honest), "false_penalties": 0,
            "honest_runs": 2, "tamper": rows, "smallest_noise_caught": smallest_caught(rows),
            "cost": {"32": {"runs": 2, "ratio_median": 0.1, "ratio_max": 0.12},
                     "128": {"runs": 1, "ratio_median": 0.25, "ratio_max": 0.25}}}


def test_conclusions_state_met_and_missed_goals_from_the_numbers():
    text = "\n".join(conclusions(verify_result()))
    assert "0 of 2 honest runs" in text and "(goal 0: met)" in text
    assert "in 1 honest runs the replica emitted a token other than" in text
    assert "0/1 runs of the 1 non-noise tamper cases" in text and "skip-block at hop 1 (0/1, blamed [2])" in text
    assert "down to 0.001 at hop 0" in text
    assert "Cost at 32 tokens**: verification took 0.1" in text and "met" in text
    assert "Cost at 128 tokens**: verification took 0.25" in text and "**missed**" in text


def test_report_renders_the_section_or_says_it_is_missing(tmp_path):
    md = render({"verify": verify_result()}, [], tmp_path)
    assert "## 9. Verification by re-execution" in md and "**267 bytes per chunk per hop**" in md
    assert "| fp32-3hop | fp32 | 0/1 (0 excused) | 0/1 (1 excused) |" in md
    assert "Verification by re-execution: 0/2 honest runs penalised (goal 0: met)" in md
    assert "`bench/results/verify.json` is missing" in render({}, [], tmp_path)


def test_the_verify_figure_is_drawn_from_its_result(tmp_path):
    from bench.plots import make_all

    figs = make_all({"verify": verify_result()}, tmp_path)
    assert [f.sources for f in figs] == [("verify",)] and figs[0].path.read_bytes()[:4] == b"\x89PNG"


def test_full_size_honest_only_runs_get_their_own_table_and_count_in_the_summary(tmp_path):
    v = verify_result()
    wide = {"bench": "verify", "honest_only": True, "prompts": {"report": 50}, "false_penalties": 1,
            "honest_runs": 200, "honest": v["honest"], "tolerances": {"source": "code", "values": {}},
            "meta": {"commit": "97a2c65b1e", "dirty": False, "command": "python -m bench.verify --honest-only",
                     "date": "2026-12-02", "machine": {"cpu": "Xeon", "cores": 16, "gpu": "NVIDIA H200"}}}
    md = render({"verify": v, "verify-gpu-h200": wide}, [], tmp_path)
    assert "`verify-gpu-h200.json`: 50 prompts x 1 mixes x greedy and sampled on Xeon x 16 cores, NVIDIA H200" in md
    assert "**False penalties at full size**: 1 of 200 honest runs were judged anything but honest (goal 0: **missed**)" in md
    assert "Verification by re-execution: 1/202 honest runs penalised" in md
