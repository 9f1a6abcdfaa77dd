"""Decode steps of several sessions run as one batch give every session what it gets alone: the same
greedy tokens (logits equal to float rounding), with sessions of different lengths joining and leaving
between steps; the stage's scheduler gathers concurrent sessions' steps into such batches."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from worker.scheduler import StageBusy, StepScheduler
from worker.shard import load_stage
from worker.shard.tiny import ARCHITECTURES, save_tiny_model
from worker.steptimes import StepTimes

SPANS = [(0, 1), (1, 3), (3, 4)]
PROMPTS = (5, 9, 3)  # prompt lengths of the three sessions
STEPS = 12
SLIDING = {"qwen2", "qwen3", "mistral", "gemma2", "gemma3", "mixtral"}  # windowed layers: run alone


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _prompt(n: int) -> torch.Tensor:
    return torch.randint(3, 256, (1, n), generator=torch.Generator().manual_seed(n))


def _step(stages, caches, x):
    for s, c in zip(stages, caches):
        x = s(x, c, last=s.spec.is_tail)
    return x[0, -1]


def _alone(stages, n: int, steps: int = STEPS) -> tuple[list[int], torch.Tensor]:
    caches = [s.new_cache() for s in stages]
    x, ids, logits = _prompt(n), [], []
    for _ in range(steps):
        out = _step(stages, caches, x)
        logits.append(out)
        ids.append(int(out.argmax()))
        x = torch.tensor([[ids[-1]]])
    return ids, torch.stack(logits)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def stages(request, tmp_path_factory):
    d = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, [load_stage(d, a, b) for a, b in SPANS]


def test_prompts_batched_together_then_decoded_together_match_each_session_alone(stages):
    arch, st = stages
    if arch in SLIDING:
        return
    caches = [[s.new_cache() for s in st] for _ in PROMPTS]
    xs, logits = [_prompt(n) for n in PROMPTS], [[] for _ in PROMPTS]
    for _ in range(STEPS):
        for k, s in enumerate(st):
            xs = s.forward_batch(xs, [c[k] for c in caches], last=s.spec.is_tail)
        for j, y in enumerate(xs):
            logits[j].append(y[0, -1])
        xs = [y[:, -1].argmax(-1, keepdim=True) for y in xs]
    for j, n in enumerate(PROMPTS):
        ids, want = _alone(st, n)
        assert [int(v.argmax()) for v in logits[j]] == ids
        torch.testing.assert_close(torch.stack(logits[j]), want, rtol=0, atol=1e-5)


def test_batched_sessions_joining_and_leaving_match_each_session_alone(stages):
    arch, st = stages
    assert st[1].batchable() == (arch not in SLIDING)
    if arch in SLIDING:
        return
    want = [_alone(st, n) for n in PROMPTS]
    caches = [[s.new_cache() for s in st] for _ in PROMPTS]
    ids: list[list[int]] = [[] for _ in PROMPTS]
    logits: list[list[torch.Tensor]] = [[] for _ in PROMPTS]
    until = [8, STEPS, STEPS]  # session 0 leaves early

    def take(j, out):
        logits[j].append(out)
        ids[j].append(int(out.argmax()))

    take(0, _step(st, caches[0], _prompt(PROMPTS[0])))  # prompts run alone, as the scheduler runs them
    take(1, _step(st, caches[1], _prompt(PROMPTS[1])))
    for step in range(STEPS + 4):
        if step == 3:  # session 2 joins while the others are decoding
            take(2, _step(st, caches[2], _prompt(PROMPTS[2])))
        live = [j for j in range(3) if ids[j] and len(ids[j]) < until[j]]
        if not live:
            break
        xs = [torch.tensor([[ids[j][-1]]]) for j in live]
        for k, s in enumerate(st):
            xs = s.forward_batch(xs, [caches[j][k] for j in live], last=s.spec.is_tail)
        for j, y in zip(live, xs):
            take(j, y[0, -1])
    for j in range(3):
        assert ids[j] == want[j][0][:until[j]]
        torch.testing.assert_close(torch.stack(logits[j]), want[j][1][:until[j]], rtol=0, atol=1e-5)
        assert [s.cache_len(c) for s, c in zip(st, caches[j])] == [PROMPTS[j] + until[j] - 1] * 3


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = save_tiny_model("llama", tmp_path_factory.mktemp("llama"))
    return load_stage(d, 0, 4)


def _threads(sched: StepScheduler, stage, n_sessions: int, steps: int) -> list[list[int]]:
    """``n_sessions`` threads decoding through ``sched`` at once, each with its own cache."""
    out: list[list[int]] = [[] for _ in range(n_sessions)]
    go = threading.Barrier(n_sessions)

    def session(j):
        cache, x = stage.new_cache(), _prompt(PROMPTS[j % 3] + j)
        sched.join(cache)
        go.wait()
        for _ in range(steps):
            y = sched.run(x, cache, last=True, timeout_s=30)
            out[j].append(int(y[0, -1].argmax()))
            x = torch.tensor([[out[j][-1]]])
        sched.release(cache)

    threads = [threading.Thread(target=session, args=(j,)) for j in range(n_sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_scheduler_batches_concurrent_sessions_and_each_gets_its_own_tokens(llama):
    sched = StepScheduler(llama, window_s=0.05, max_batch=8)
    got = _threads(sched, llama, 6, 10)
    for j in range(6):
        assert got[j] == _alone([llama], PROMPTS[j % 3] + j, 10)[0]
    assert sched.steps == 60
    assert sched.batches > 0 and sched.batched_steps > sched.batches  # steps really ran together
    assert sched.batched_steps / sched.batches > 3  # the open sessions were waited for: batches are full


def test_prompts_of_different_lengths_that_arrive_together_run_as_one_batch(llama):
    """Prompts into empty caches batch too (left-padded): each session's tokens are its own."""
    sched = StepScheduler(llama, window_s=0.2, max_batch=8)
    got = _threads(sched, llama, 4, 1)
    assert got == [_alone([llama], PROMPTS[j % 3] + j, 1)[0] for j in range(4)]
    assert (sched.batches, sched.batched_steps) == (1, 4)


def test_max_batch_1_runs_every_step_alone(llama):
    sched = StepScheduler(llama, window_s=0.05, max_batch=1)
    got = _threads(sched, llama, 3, 5)
    assert got == [_alone([llama], PROMPTS[j] + j, 5)[0] for j in range(3)]
    assert sched.batches == 0


class _Broken:
    """A stage whose forward fails after a pause (a bug, or memory running out)."""

    def __init__(self, pause_s: float = 0.0):
        self.pause_s = pause_s

    def forward(self, x, cache, *, last=False):
        threading.Event().wait(self.pause_s)
        raise RuntimeError("stage failed")


def test_a_failing_forward_reaches_its_caller_and_the_scheduler_keeps_serving():
    stage = _Broken()
    sched = StepScheduler(stage, window_s=0.0)
    with pytest.raises(RuntimeError, match="stage failed"):
        sched.run(torch.zeros(1, 1), None)
    with pytest.raises(RuntimeError, match="stage failed"):
        sched.run(torch.zeros(1, 1), None)


def test_a_step_that_does_not_run_in_time_is_refused_as_busy():
    stage = _Broken(pause_s=1.0)
    sched = StepScheduler(stage, window_s=0.0)
    first = threading.Thread(target=lambda: pytest.raises(RuntimeError, sched.run, torch.zeros(1, 1), None))
    first.start()
    with pytest.raises(StageBusy, match="overloaded"):
        sched.run(torch.zeros(1, 1), None, timeout_s=0.2)
    first.join(5)


def test_groups_taking_turns_keep_their_batch_caches_and_match_each_session_alone(llama, monkeypatch):
    """Two groups of sessions alternating on a stage (as they do going round a ring) are gathered
    once each, not at every step, and each session still gets what it gets alone."""
    from worker.shard import batch as batch_mod

    gathered = []
    real = batch_mod._gather
    monkeypatch.setattr(batch_mod, "_gather", lambda *a: gathered.append(1) or real(*a))
    groups = [[0, 1], [2, 3]]
    caches = [llama.new_cache() for _ in range(4)]
    ids = [[int(llama(_prompt(PROMPTS[j % 3] + j), caches[j], last=True)[0, -1].argmax())] for j in range(4)]
    for _ in range(6):
        for g in groups:
            ys = llama.forward_batch([torch.tensor([[ids[j][-1]]]) for j in g], [caches[j] for j in g], last=True)
            for j, y in zip(g, ys):
                ids[j].append(int(y[0, -1].argmax()))
    assert len(gathered) == 2  # once per group, on its first batched step
    for j in range(4):
        assert ids[j] == _alone([llama], PROMPTS[j % 3] + j, 7)[0]


class _Recording:
    """A batchable stage that records the caches of every forward and returns zeros."""

    device = torch.device("cpu")

    def __init__(self):
        self.batches: list[tuple[int, ...]] = []

    def batchable(self):
        return True

    def cache_len(self, cache):
        return 1

    def forward_batch(self, xs, caches, *, last=False):
        self.batches.append(tuple(c["n"] for c in caches))
        return [torch.zeros(1, 1, 2) for _ in xs]

    def forward(self, x, cache, *, last=False):
        self.batches.append((cache["n"],))
        return torch.zeros(1, 1, 2)


def _joined(sched, n: int) -> list[dict]:
    """``n`` sessions' caches (each knows its number), opened on ``sched``."""
    caches = [{"n": j} for j in range(n)]
    for c in caches:
        sched.join(c)
    return caches


def _staggered(sched, caches, members, gap_s):
    """Steps of ``members`` handed to ``sched`` ``gap_s`` apart (as a sender's threads taking turns
    put them on the wire); returns each step's StepTimes once all ran."""
    times, threads = [], []
    for j in members:
        times.append(StepTimes())
        t = threading.Thread(target=sched.run, args=(torch.zeros(1, 1, 2), caches[j]),
                             kwargs={"timeout_s": 10, "times": times[-1]})
        t.start()
        threads.append(t)
        threading.Event().wait(gap_s)
    for t in threads:
        t.join(10)
    return times


def test_a_group_runs_as_soon_as_its_own_members_are_in_and_in_its_own_order():
    """With two groups going round, a group does not wait out the batch window for the other one."""
    stage = _Recording()
    window = 0.4
    sched = StepScheduler(stage, window_s=window, max_batch=8)
    caches = _joined(sched, 4)

    def burst(members):
        return max(t.cur["queue"] for t in _staggered(sched, caches, members, 0.0))

    burst([1, 0])  # first steps: the groups form (each waits out its window: the others are missing)
    burst([3, 2])
    queued = [burst([0, 1]), burst([2, 3]), burst([1, 0])]
    assert stage.batches[2:] == [stage.batches[0], stage.batches[1], stage.batches[0]]  # each group keeps its order
    assert max(queued) < window / 2  # the old rule waited a whole window for the group that ran last


class _Prompts(_Recording):
    """Every step is a prompt into an empty cache."""

    def cache_len(self, cache):
        return 0


def test_a_group_whose_steps_come_further_apart_than_the_window_still_runs_whole():
    """A group that ran together waits for its members up to the cap (MAX_WAIT_WINDOWS windows),
    not just one window after the last arrival: a burst from upstream with gaps (its sender's
    threads taking turns) is not split, which would halve every later batch of the ring."""
    stage = _Recording()
    window = 0.05
    sched = StepScheduler(stage, window_s=window, max_batch=8)
    caches = _joined(sched, 4)
    _staggered(sched, caches, [0, 1, 2, 3], 0.0)  # the group forms (in whatever order its threads came)
    assert [sorted(b) for b in stage.batches] == [[0, 1, 2, 3]]
    _staggered(sched, caches, [0, 1, 2, 3], 2 * window)  # the next step's burst, with gaps of two windows
    assert stage.batches[1] == stage.batches[0]  # whole, in its order; the old rule ran (0,) after one window


def test_sessions_that_just_opened_are_waited_for_so_the_first_batch_holds_them_all():
    """Sessions that joined but have not run a step yet (their prompts are on their way) are waited
    for up to the cap: the first batch, which every later one follows, is not cut at one window."""
    stage = _Prompts()
    window = 0.05
    sched = StepScheduler(stage, window_s=window, max_batch=8)
    caches = _joined(sched, 3)
    _staggered(sched, caches, [0, 1, 2], 2 * window)
    assert stage.batches == [(0, 1, 2)]


def test_a_missing_member_is_waited_for_at_most_the_cap():
    """A member that does not come (stalled elsewhere) holds its group back at most MAX_WAIT_WINDOWS
    windows; then the others run without it."""
    from worker.scheduler import MAX_WAIT_WINDOWS

    stage = _Recording()
    window = 0.02
    sched = StepScheduler(stage, window_s=window, max_batch=8)
    caches = _joined(sched, 3)
    _staggered(sched, caches, [0, 1, 2], 0.0)
    times = _staggered(sched, caches, [0, 1], 0.0)  # 2 never comes
    assert stage.batches[1] == (0, 1)
    assert max(t.cur["queue"] for t in times) < (MAX_WAIT_WINDOWS + 3) * window


def test_steps_queued_all_at_once_never_make_a_batch_past_max_batch():
    """Steps handed in together (a batch that came in one message, or a burst that queued while the
    stage ran) are cut at max_batch: the old gather took every fitting step it found at once, and a
    head with max_batch 8 sent a batch of 13 that its next hop (max_batch 8) refused."""
    stage = _Recording()
    sched = StepScheduler(stage, window_s=0.05, max_batch=3)
    caches = _joined(sched, 7)
    reqs = sched.submit_many([(torch.zeros(1, 1, 2), c) for c in caches])
    for r in reqs:
        sched.wait(r, 10)
    assert sorted(len(b) for b in stage.batches) == [1, 3, 3]
    assert sorted(n for b in stage.batches for n in b) == list(range(7))
    assert all(r.peers == 1 and r.size == len(b) for r in reqs for b in stage.batches if r.cache["n"] in b)


def test_a_request_learns_how_many_of_its_forward_go_where_it_goes():
    """``peers``: the requests of its forward with the same tag (next hop), which the head's batch
    to that hop waits for; untagged requests (the tail's) go nowhere together."""
    stage = _Recording()
    sched = StepScheduler(stage, window_s=0.05, max_batch=8)
    caches = _joined(sched, 5)
    reqs = sched.submit_many([(torch.zeros(1, 1, 2), c) for c in caches], tags=["a", "b", "a", "a", None])
    for r in reqs:
        sched.wait(r, 10)
    assert [r.peers for r in reqs] == [3, 1, 3, 3, 1]
    assert len({r.batch for r in reqs}) == 1 and len(stage.batches) == 1


def test_to_host_moves_a_decode_batch_as_rows_of_float32_and_keeps_other_shapes_apart():
    from worker.scheduler import to_host

    rows = [torch.full((1, 1, 4), float(j), dtype=torch.bfloat16) + 0.5 for j in range(3)]
    out = to_host(rows)
    assert [tuple(y.shape) for y in out] == [(1, 1, 4)] * 3
    assert all(y.dtype == torch.float32 for y in out)
    assert [float(y[0, 0, 0]) for y in out] == [0.5, 1.5, 2.5]
    mixed = to_host([torch.ones(1, 2, 4, dtype=torch.bfloat16), (torch.ones(1, 3, 4), torch.zeros(1, 1))])
    assert tuple(mixed[0].shape) == (1, 2, 4) and isinstance(mixed[1], tuple) and mixed[1][1].dtype == torch.float32


class _OnAccelerator(_Recording):
    """A stage that says it runs on a GPU and returns its rows in bfloat16."""

    device = "cuda:0"

    def forward_batch(self, xs, caches, *, last=False):
        self.batches.append(tuple(c["n"] for c in caches))
        return [torch.full((1, 1, 2), c["n"] + 0.25, dtype=torch.bfloat16) for c in caches]


def test_each_session_gets_its_own_row_of_an_accelerator_stage_on_the_cpu_in_float32():
    """A GPU stage's batch output reaches every session's thread already on the CPU (one copy for
    the batch), in float32, each its own row: its receipt, the codec and sampling read it there."""
    stage = _OnAccelerator()
    sched = StepScheduler(stage, window_s=0.5, max_batch=8)  # all three are open: they end the wait early
    caches = _joined(sched, 3)
    got = {}

    def run(j):
        got[j] = sched.run(torch.zeros(1, 1, 2), caches[j], timeout_s=10)

    threads = [threading.Thread(target=run, args=(j,)) for j in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [sorted(b) for b in stage.batches] == [[0, 1, 2]]  # one batch, in whatever order they came
    assert all(got[j].device.type == "cpu" and got[j].dtype == torch.float32 for j in range(3))
    assert [float(got[j][0, 0, 0]) for j in range(3)] == [0.25, 1.25, 2.25]


class _Growing(_Recording):
    """A stage whose caches grow by the positions they run: a prompt, then decode steps."""

    def cache_len(self, cache):
        return cache.get("len", 0)

    def forward_batch(self, xs, caches, *, last=False):
        for x, c in zip(xs, caches):
            c["len"] = c.get("len", 0) + x.shape[1]
        return super().forward_batch(xs, caches, last=last)

    def forward(self, x, cache, *, last=False):
        cache["len"] = cache.get("len", 0) + x.shape[1]
        return super().forward(x, cache, last=last)


def _wait_all(sched, reqs, timeout_s=10):
    for r in reqs:
        sched.wait(r, timeout_s)


def test_prompts_bound_on_run_in_chunks_and_their_first_decode_steps_run_as_one_group_again():
    """Prompts bound for a next hop are cut at ``prompt_chunk_tokens`` positions a forward, so the next
    stage starts on the first chunk while this one runs the next (before, the three stages prefilled
    16 sessions one after another). Their sessions come back for their first decode step a chunk apart,
    further than a group's cap of 10 windows: they wait for one another (up to FIRST_DECODE_WAIT_S) and
    decode as one group, not as one group per chunk for the rest of the job."""
    from worker.scheduler import FIRST_DECODE_WAIT_S, MAX_WAIT_WINDOWS

    stage = _Growing()
    window = 0.01
    sched = StepScheduler(stage, window_s=window, max_batch=16, prompt_chunk_tokens=10)
    caches = _joined(sched, 5)
    _wait_all(sched, sched.submit_many([(torch.zeros(1, 4, 2), c) for c in caches], tags=["next"] * 5))
    assert stage.batches == [(0, 1), (2, 3), (4,)]  # at most 10 positions a forward
    gap = MAX_WAIT_WINDOWS * window * 3
    assert gap < FIRST_DECODE_WAIT_S
    t0 = time.monotonic()
    early = sched.submit_many([(torch.zeros(1, 1, 2), c) for c in caches[:2]], tags=["next"] * 2)
    threading.Event().wait(gap)  # the later chunks' answers are still on their way round the ring
    late = sched.submit_many([(torch.zeros(1, 1, 2), c) for c in caches[2:]], tags=["next"] * 3)
    _wait_all(sched, early + late)
    assert sorted(stage.batches[3]) == [0, 1, 2, 3, 4] and len(stage.batches) == 4
    assert all(r.peers == 5 for r in early + late)
    _wait_all(sched, sched.submit_many([(torch.zeros(1, 1, 2), c) for c in caches], tags=["next"] * 5))
    assert sorted(stage.batches[4]) == [0, 1, 2, 3, 4]  # and stays one group
    assert time.monotonic() - t0 < gap + FIRST_DECODE_WAIT_S


def test_a_first_decode_step_waits_for_its_chunk_mates_at_most_the_cap():
    """A session of the same cut that never comes back (stalled elsewhere) holds the others' first
    decode step back FIRST_DECODE_WAIT_S at most."""
    from worker.scheduler import FIRST_DECODE_WAIT_S

    stage = _Growing()
    sched = StepScheduler(stage, window_s=0.01, max_batch=16, prompt_chunk_tokens=4)
    caches = _joined(sched, 3)
    _wait_all(sched, sched.submit_many([(torch.zeros(1, 4, 2), c) for c in caches], tags=["next"] * 3))
    times = _staggered(sched, caches, [0, 1], 0.0)
    assert sorted(stage.batches[3]) == [0, 1]  # 2 never came
    assert FIRST_DECODE_WAIT_S * 0.8 < max(t.cur["queue"] for t in times) < FIRST_DECODE_WAIT_S + 0.5


def test_a_batch_its_sender_cut_runs_without_waiting_for_sessions_that_have_not_stepped():
    """A batch that came in one message (``whole``: the sender ran it as one forward and cut it there)
    runs at once: before, a next hop held a chunk of prompts up to 40 windows for the sessions of the
    other chunks (opened, prompts not in yet), which undid the head's cut."""
    from worker.scheduler import PROMPT_WAIT_WINDOWS

    stage = _Prompts()
    window = 0.05
    sched = StepScheduler(stage, window_s=window, max_batch=8)
    caches = _joined(sched, 4)
    times = [StepTimes(), StepTimes()]
    reqs = sched.submit_many([(torch.zeros(1, 3, 2), c) for c in caches[:2]], whole=True)
    for r, t in zip(reqs, times):
        sched.wait(r, 10, times=t)
    assert stage.batches == [(0, 1)]
    assert max(t.cur["queue"] for t in times) < PROMPT_WAIT_WINDOWS * window / 4
