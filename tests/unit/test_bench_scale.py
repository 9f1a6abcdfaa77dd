"""The pure parts of the scale benchmarks: job schedules, percentiles, CPU accounting, token agreement."""

from __future__ import annotations

from collections import Counter

import pytest

from bench._sysload import TICK, machine_ticks, process_cpu_s
from bench.concurrency import agreement, monolithic_threads, plan_jobs
from bench.eval.report_scale import goal
from bench.load import schedule
from bench.load_report import percentile


def test_schedule_is_steady_shares_kinds_exactly_and_rotates_requesters():
    s = schedule(100, 0.5, [9, 10, 11], {"greedy": 0.4, "sampled": 0.3, "image": 0.3})
    assert [at for _, _, at in s] == [i * 2.0 for i in range(100)]
    assert Counter(k for k, _, _ in s) == {"greedy": 40, "sampled": 30, "image": 30}
    assert [r for _, r, _ in s[:4]] == [9, 10, 11, 9]
    assert s == schedule(100, 0.5, [9, 10, 11], {"greedy": 0.4, "sampled": 0.3, "image": 0.3})  # seeded


def test_schedule_rounding_still_gives_n_jobs():
    assert len(schedule(7, 1.0, [9], {"a": 1, "b": 1, "c": 1})) == 7


def test_percentile_interpolates_and_handles_empty():
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([0.0, 10.0], 0.95) == 9.5
    assert percentile([5.0], 0.95) == 5.0


def test_cpu_seconds_from_proc_stat_lines():
    stat = "1234 (python -m x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1"
    assert process_cpu_s(stat) == 300 / TICK  # utime 250 + stime 50 ticks
    idle, total = machine_ticks("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert (idle, total) == (850, 1000)


def test_agreement_counts_equal_positions():
    assert agreement([[1, 2, 3], [4, 5]], [[1, 2, 0], [4, 5]]) == 0.8
    assert agreement([], []) == 0.0


def test_monolithic_gets_the_rings_threads_but_never_more_than_the_cores():
    """3 ring processes of 1 thread on 2 cores: the monolithic model gets 2 threads, not 3, which
    oversubscribed it (its throughput swung 50-90 tokens/s between runs)."""
    assert monolithic_threads(1, 3, cores=2) == 2
    assert monolithic_threads(2, 3, cores=16) == 6
    assert monolithic_threads(1, 1, cores=1) == 1


def test_job_ids_of_every_level_and_repeat_are_distinct():
    jobs = plan_jobs([1, 4, 16], 3)
    ids = [j for js in jobs.values() for j in js]
    assert len(ids) == len(set(ids)) == 2 * 3 * 21 and min(ids) >= 10
    assert len(jobs[("batched", 16, 2)]) == 16


def test_relay_release_keeps_order_and_adds_the_delay():
    from bench.relay import release

    assert release(1.0, 0.0, 0.05, 0.0, 0.3) == 1.05
    assert release(1.0, 0.0, 0.05, 0.01, 1.0) == pytest.approx(1.06)
    assert release(1.0, 0.0, 0.05, 0.01, 0.0) == pytest.approx(1.04)
    assert release(1.0, 1.2, 0.05, 0.01, 0.0) == 1.2  # never before the chunk ahead of it


def test_wan_limit_counts_the_delays_a_token_crosses_down_and_up_the_ring():
    from bench.wan import job_ids, limit_tokens_per_s

    assert limit_tokens_per_s(32, 2.0, 0) == 16.0
    assert limit_tokens_per_s(32, 2.0, 100, stages=3) == pytest.approx(32 / (2.0 + 32 * 0.2))
    ids = [j for c in range(4) for js in job_ids(c, 3, 16).values() for j in js]
    assert len(ids) == len(set(ids))


def test_concurrency_goal_is_the_issues_share_per_device_at_16_sessions():
    row = {"16": {"vs_monolithic": 0.87}}
    assert goal({"device": "cuda", "sessions": row}) == ("ring >= 0.85 of monolithic batched at 16 sessions on cuda",
                                                         True)
    assert goal({"device": "cpu", "sessions": row})[1] is False
    assert goal({"device": "cpu", "sessions": {"4": {"vs_monolithic": 1.0}}}) is None


def test_wan_ratios_pair_each_run_with_the_same_run_at_the_reference_rtts():
    """A slow pass (a loaded machine) slows every RTT in it: per-run ratios cancel it, unlike medians
    taken per RTT."""
    from argparse import Namespace

    from bench.wan import summarize_rows

    args = Namespace(tokens=10, sessions=2, repeats=3, model="m", codec="c", rate_mbit=100.0, jitter=0.1)
    slow = [1.0, 3.0, 1.0]  # pass 2 ran three times slower, at every RTT
    rows = {k: {"single_s": [s * t for s in slow], "multi_s": [s * m for s in slow], "single_ids": [[1]] * 3}
            for k, t, m in (("0", 1.0, 2.0), ("10", 1.2, 2.0), ("100", 3.0, 2.5))}
    out = summarize_rows(rows, args)["rtt_ms"]
    assert out["100"]["aggregate_vs_smallest_rtt"] == 0.8 and out["100"]["runs"]["aggregate_vs_smallest_rtt"] == [0.8] * 3
    # the limit adds the delays (10 tokens x 2 legs x 10 ms) to the same pass's time at RTT 0
    assert out["10"]["runs"]["vs_limit"] == [1.0, round((10 / 3.6) / (10 / 3.2), 3), 1.0]


def test_stage_profile_section_states_the_stage_sums_and_generates_baseline():
    from bench.eval.report_scale import scale_section

    sp = {"bench": "stageprof", "model": "m", "device": "cuda", "dtype": "bfloat16", "spans": [[0, 5], [5, 11], [11, 16]],
          "tokens": 32, "unsplit_ms_per_step": 76.2, "stage_ms_per_step": [3.8, 4.4, 4.1],
          "stages_sum_ms_per_step": 12.3, "profile_top_own_time": [
              {"function": "linear", "calls_per_step": 113.0, "own_ms_per_step": 2.6, "cum_ms_per_step": 2.6}]}
    pipe = {"stages": {"3": {"monolithic_tokens_per_s": 80.0}}}
    md = scale_section({"stageprof-gpu-x": sp, "pipeline-gpu-x": pipe})
    assert "3.8 + 4.4 + 4.1 = **12.3 ms per step**" in md and "12.5 ms per token" in md
    assert "| linear | 113 | 2.6 | 2.6 |" in md


def test_balanced_spans_minimise_the_largest_stage_and_count_the_output_layer():
    from bench._procs import balanced_spans, compute_spans
    from worker.store import resolve

    assert balanced_spans([1] * 30, 3) == [(0, 10), (10, 20), (20, 30)]
    assert balanced_spans([5, 1, 1, 1, 1, 1], 2) == [(0, 1), (1, 6)]
    with pytest.raises(ValueError):
        balanced_spans([1, 1], 3)
    # SmolLM2: its tied output layer costs about 8 blocks, so the tail serves fewer blocks
    assert compute_spans(resolve("smollm2-135m"), 3) == [(0, 12), (12, 25), (25, 30)]


def test_the_load_summary_names_the_checks_that_did_not_pass():
    from bench.eval.report_scale import scale_bullets

    ld = {"jobs": 100, "jobs_per_minute": 17.7, "all_checks_pass": False, "settle_s": {"p50": 15.3, "p95": 27.9},
          "checks": {"all_settled": True, "all_agreed_unanimously": False, "stake_conserved": True}}
    (line,) = [b for b in scale_bullets({"load": ld}) if b.startswith("- Load")]
    assert "checks that did not pass: **all agreed unanimously**" in line and "stake" not in line
