"""Per-step phase counters: what a node logs at the end of a session is what the hop profile reads back,
per decode step (the prompt step left out), with the unmeasured rest as ``other``; the stage's scheduler
reports each step's queueing, forward and batch size."""

from __future__ import annotations

import threading

import pytest
import torch

from bench.eval.report_scale import hopprofile_part, step_split
from bench.hopprofile import mean_by_steps, profile_of, summaries
from worker.scheduler import StepScheduler
from worker.shard import load_stage
from worker.shard.tiny import save_tiny_model
from worker.steptimes import StepTimes, parse


def test_summary_is_ms_per_decode_step_and_parses_back():
    t = StepTimes()
    t.add("forward", 0.5)  # the prompt: not counted
    t.end_step(0, 0.6)
    for step in (1, 2):
        t.ran(0.001, 0.010, 4)
        t.add("sign", 0.0002)
        t.checked(0.0003)
        t.end_step(step, 0.020)
    got = parse("closed job 7 replica 0 at hop 1 after 3 steps; ms per decode step: " + t.summary())
    assert got["steps"] == 2 and got["batch"] == 4
    assert got["total"] == pytest.approx(20.0) and got["forward"] == pytest.approx(10.0)
    assert got["queue"] == pytest.approx(1.0) and got["sign"] == pytest.approx(0.2)
    assert got["other"] == pytest.approx(20.0 - 10.0 - 1.0 - 0.2)  # what the phases leave of the step
    assert got["verify_cpu"] == pytest.approx(0.3)


def test_the_profile_reads_each_stage_from_the_log_lines_and_derives_transport():
    lines = ["job 11 replica 0: 8 ids through 3 hop(s); head ms per decode step: steps=7 batch=1.00 total=30.000 "
             "forward=10.000 next_hop=19.000 other=1.000 verify_cpu=0.100",
             "closed job 11 replica 0 at hop 1 after 8 steps; ms per decode step: steps=7 batch=1.00 total=17.000 "
             "forward=8.000 next_hop=8.500 other=0.500 verify_cpu=0.100",
             "closed job 11 replica 0 at hop 2 after 8 steps; ms per decode step: steps=7 batch=1.00 total=7.000 "
             "forward=7.000 verify_cpu=0.100",
             "closed job 12 replica 0 at hop 2 after 8 steps; ms per decode step: steps=7 total=99.000"]
    found = summaries(lines, {11})
    assert sorted(found) == [0, 1, 2] and all(len(v) == 1 for v in found.values())
    prof = profile_of([mean_by_steps(found[i]) for i in range(3)], 1)
    assert prof["transport_ms"] == [pytest.approx(2.0), pytest.approx(1.5)]  # 19 - 17, 8.5 - 7
    assert prof["busy_share"] == [0.333, 0.267, 0.233]  # forward x sessions / batch over the head's step
    assert prof["stages"][2]["forward"] == 7.0


def test_sessions_are_weighted_by_their_steps():
    assert mean_by_steps([{"steps": 1, "forward": 10.0}, {"steps": 3, "forward": 2.0}])["forward"] == 4.0


def test_the_scheduler_tells_each_step_its_queueing_forward_and_batch(tmp_path):
    stage = load_stage(save_tiny_model("llama", tmp_path), 0, 4)
    sched = StepScheduler(stage, window_s=0.2, max_batch=8)
    times = [StepTimes() for _ in range(3)]
    go = threading.Barrier(3)

    def session(j):
        cache = stage.new_cache()
        sched.join(cache)
        go.wait()
        sched.run(torch.tensor([[5 + j, 6, 7]]), cache, last=True, timeout_s=30, times=times[j])
        sched.release(cache)

    threads = [threading.Thread(target=session, args=(j,)) for j in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [t.cur_batch for t in times] == [3, 3, 3]  # the three prompts ran as one batch
    assert all(t.cur["forward"] > 0 and t.cur["queue"] >= 0 for t in times)


def test_the_report_table_has_a_column_per_stage_and_session_count():
    stage = {"total": 5.0, "batch": 1.0, "queue": 0.0, "forward": 4.0, "handoff": 0.0, "other": 1.0, "verify_cpu": 0.1}
    level = {"tokens_per_s": 9.0, "wall_ms_per_round": 110.0, "cpu_ms_per_token": {"stage0": 3.0, "stage1": 4.0},
             "stages": [stage, stage], "transport_ms": [1.25], "busy_share": [0.5, 0.25]}
    h = {"model": "m", "device": "cpu", "dtype": "float32", "stages": 2, "spans": [[0, 1], [1, 2]], "codec": "c",
         "tokens": 4, "threads": 1, "batch_window_ms": 5.0, "repeats": 1, "headline": "median", "note": "n",
         "levels": {"1": level, "16": level}, "protobuf": {"step_bytes": 1, "step_serialise_us": 1,
                                                         "step_parse_us": 1, "answer_bytes": 1,
                                                         "answer_serialise_us": 1, "answer_parse_us": 1,
                                                         "per_hop_per_step_us": 4}}
    text = hopprofile_part("hopprofile-cpu", h)
    assert "| ms per decode step | 1 sess., stage 0 | 1 sess., stage 1 | 16 sess., stage 0 | 16 sess., stage 1 |" in text
    assert "| gRPC transport to the next stage and back | 1.25 | – | 1.25 | – |" in text
    assert "| stage thread in forwards, share of the round | 0.5 | 0.25 | 0.5 | 0.25 |" in text


def test_the_step_at_the_head_splits_into_forwards_queueing_transport_and_own_work():
    stages = [{"total": 30.0, "forward": 10.0, "queue": 1.0, "handoff": 0.5, "sign": 0.2, "other": 0.3},
              {"total": 16.0, "forward": 12.0, "queue": 2.0, "handoff": 0.5, "decode": 0.4, "other": 0.1}]
    split = step_split({"stages": stages, "transport_ms": [2.0]})
    assert split == {"total": 30.0, "forward": 22.0, "queue": 3.0, "handoff": 1.0, "transport": 2.0,
                     "own work": pytest.approx(1.0)}
