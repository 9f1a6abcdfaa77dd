"""Decode steps of sessions that ran as one batch cross each hop as one ``ForwardBatch`` message
(worker.ring.batch), through a 3-process ring of a tiny Llama: every session still gets its own
greedy tokens and its receipts still hold past a receipt chunk; and a batch from a hostile sender
fails only the messages that are wrong, each on its own."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import grpc
import pytest
import torch
from eth_account import Account
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._procs import bench_key, free_port, ring_route, workers  # noqa: E402
from proto.tessera.v1 import worker_pb2 as pb  # noqa: E402
from proto.types import JobId, NodeId  # noqa: E402
from worker import codec  # noqa: E402
from worker.config import WorkerConfig  # noqa: E402
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView  # noqa: E402
from worker.ring import Channels, run_replica  # noqa: E402
from worker.shard import load_stage  # noqa: E402
from worker.shard.tiny import save_tiny_model  # noqa: E402
from worker.signing import Signer, verify  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from peers import HeldStream, Sender, stub  # noqa: E402

pytestmark = pytest.mark.integration
SPANS = [(0, 1), (1, 3), (3, 4)]
SESSIONS = 5
TOKENS = 40  # past the first receipt chunk (the prompt, then 32 steps a chunk)
HOSTILE_JOBS = (60, 61, 62)  # sessions the hostile tests open on the tail themselves, as hop 1
MAX_BATCH = 4  # smaller than the sessions that batch upstream: the stage cuts its forwards, no batch is refused
MAX_SESSIONS = 12


def _prompt(j: int) -> list[int]:
    return torch.randint(3, 256, (3 + j,), generator=torch.Generator().manual_seed(40 + j)).tolist()


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batchstream")
    d = save_tiny_model("llama", tmp / "llama")
    ports = [0] + [free_port() for _ in SPANS[1:]]
    params = GenParams(max_tokens=TOKENS, codec=codec.FP32)
    routes = [ring_route(j + 1, "llama", 4, SPANS, ports, params) for j in range(SESSIONS)]
    routes += [ring_route(j, "llama", 4, SPANS, ports, params) for j in HOSTILE_JOBS]
    with workers(d, SPANS, ports, routes, tmp, extra=("--max-batch", str(MAX_BATCH), "--max-sessions",
                                                      str(MAX_SESSIONS))):
        yield {"dir": d, "ports": ports, "view": StaticPlanView(routes), "head": load_stage(d, *SPANS[0])}


def _batched(port: int) -> int:
    return stub(port).Info(pb.InfoRequest(), timeout=10).batched_steps


def test_sessions_that_decode_together_cross_every_hop_in_batches_and_each_gets_its_own_tokens(ring):
    channels = Channels()  # shared, as the daemon's and the benchmarks' are: the head's batches form in it
    before = [_batched(p) for p in ring["ports"][1:]]
    out: list[list[int]] = [[] for _ in range(SESSIONS)]
    go = threading.Barrier(SESSIONS)

    def one(j):
        go.wait()
        out[j] = run_replica(ring["head"], ring["view"].route(JobId(j + 1)), 0, _prompt(j), Signer(bench_key(0)),
                             channels=channels)

    threads = [threading.Thread(target=one, args=(j,)) for j in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    channels.close()
    full = AutoModelForCausalLM.from_pretrained(ring["dir"]).eval()
    for j in range(SESSIONS):
        want = full.generate(torch.tensor([_prompt(j)]), max_new_tokens=TOKENS, do_sample=False, pad_token_id=0,
                             eos_token_id=None)
        assert out[j] == want[0, 3 + j:].tolist(), f"session {j}"  # and the tail accepted every hop's receipt
    after = [_batched(p) for p in ring["ports"][1:]]
    assert after[0] - before[0] > TOKENS and after[1] - before[1] > TOKENS  # most decode steps came in batches


def test_prompts_cut_into_chunks_cross_the_ring_in_batches_and_each_session_gets_its_own_tokens(ring, monkeypatch):
    """With prompts cut at 8 positions a forward (``prompt_chunk_tokens``), the head's chunks cross each
    hop as batches of prompts, the stages run each chunk as it comes (the next hop does not wait for the
    other chunks' sessions), the chunks' first decode steps join up again, and every session still gets
    ``generate``'s greedy tokens with every hop's receipt accepted."""
    from worker.scheduler import StepScheduler

    config = WorkerConfig(prompt_chunk_tokens=8)
    head = load_stage(ring["dir"], *SPANS[0])  # its own scheduler, with this config's chunk
    channels = Channels()
    before = [_batched(p) for p in ring["ports"][1:]]
    jobs = range(1, SESSIONS + 1)
    out: dict[int, list[int]] = {}
    go = threading.Barrier(SESSIONS)

    def one(j):
        go.wait()
        out[j] = run_replica(head, ring["view"].route(JobId(j + 1)), 0, _prompt(j), Signer(bench_key(0)),
                             channels=channels, config=config)

    sizes: list[int] = []
    run = StepScheduler._execute

    def execute(self, batch):
        if batch[0].kind == "prompt":
            sizes.append(sum(r.x.shape[1] for r in batch))
        return run(self, batch)

    monkeypatch.setattr(StepScheduler, "_execute", execute)
    threads = [threading.Thread(target=one, args=(j - 1,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    channels.close()
    assert len(sizes) > 1 and max(sizes) <= 8  # cut: no forward of prompts past 8 positions (each is at most 7)
    full = AutoModelForCausalLM.from_pretrained(ring["dir"]).eval()
    for j in range(SESSIONS):
        want = full.generate(torch.tensor([_prompt(j)]), max_new_tokens=TOKENS, do_sample=False, pad_token_id=0,
                             eos_token_id=None)
        assert out[j] == want[0, 3 + j:].tolist(), f"session {j}"
    after = [_batched(p) for p in ring["ports"][1:]]
    assert after[0] - before[0] > TOKENS and after[1] - before[1] > TOKENS


def _open(ring, job: int) -> tuple[Sender, HeldStream]:
    """A session of ``job`` opened on the tail by the test as its hop 1, its prompt run."""
    peer = Sender(job, key=bench_key(1), hop=1)
    stream = HeldStream(grpc.insecure_channel(f"127.0.0.1:{ring['ports'][2]}"))
    stream.send(peer.open())
    x = torch.randn(1, 4, 64, generator=torch.Generator().manual_seed(job))
    stream.send(peer.step(0, codec.encode(x, codec.FP32)))
    return peer, stream


def _token(step: int) -> codec.Encoded:
    return codec.encode(torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(step)), codec.FP32)


def _batch(port: int, msgs) -> pb.HopBatch:
    return next(stub(port).ForwardBatch(iter([pb.HopBatch(messages=msgs)]), timeout=30))


def test_a_batch_refuses_each_bad_message_alone_and_answers_the_rest(ring):
    a, b, c = (_open(ring, j) for j in HOSTILE_JOBS)
    tail = ring["view"].route(JobId(HOSTILE_JOBS[0])).hop(0, 2).node
    forged = a[0].step(1, _token(1))
    forged.signature = forged.signature[:10] + bytes([forged.signature[10] ^ 1]) + forged.signature[11:]
    stranger = Sender(HOSTILE_JOBS[1], key=bench_key(1), hop=1)  # right key, a nonce no session has
    late = c[0].step(5, _token(5))  # out of order: a session's own predecessor breaking the protocol
    answer = _batch(ring["ports"][2], [forged, stranger.step(1, _token(1)), b[0].step(1, _token(1)), late])
    codes = [grpc.StatusCode.PERMISSION_DENIED.value[0]] * 2 + [0, grpc.StatusCode.PERMISSION_DENIED.value[0]]
    assert list(answer.codes) == codes
    assert "signature" in answer.messages[0].error or "signed by" in answer.messages[0].error
    assert "no session" in answer.messages[1].error and "expected step 1" in answer.messages[3].error
    ok = answer.messages[2]
    domain = ring["view"].route(JobId(HOSTILE_JOBS[1])).domain
    verify(ok, tail, domain)  # a real, signed answer with the tail's token
    assert (ok.step, ok.session, len(ok.ids)) == (1, b[0].nonce, 1)
    # the forged message did not end its session (anyone could have sent it): its real step 1 runs
    again = _batch(ring["ports"][2], [a[0].step(1, _token(1)), b[0].step(2, _token(2))])
    assert list(again.codes) == [0, 0]
    # the session whose own predecessor sent a step out of order is over, as on its own stream
    assert list(_batch(ring["ports"][2], [c[0].step(1, _token(1))]).codes) == [grpc.StatusCode.PERMISSION_DENIED
                                                                               .value[0]]


def test_a_batch_refuses_two_steps_of_one_session_and_any_message_but_a_step(ring):
    a, _ = _open(ring, HOSTILE_JOBS[0])
    twice = _batch(ring["ports"][2], [a.step(1, _token(1)), a.step(2, _token(2)), a.close(2)])
    denied = grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert list(twice.codes) == [0, denied, denied]
    assert "two steps" in twice.messages[1].error and "STEP messages only" in twice.messages[2].error


def test_a_batch_larger_than_the_node_takes_ends_its_stream_and_the_node_serves_on(ring):
    a, _ = _open(ring, HOSTILE_JOBS[1])
    with pytest.raises(grpc.RpcError) as err:
        _batch(ring["ports"][2], [a.step(1 + i, _token(i)) for i in range(MAX_SESSIONS + 1)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most" in err.value.details()
    assert list(_batch(ring["ports"][2], [a.step(1, _token(1))]).codes) == [0]  # nothing of it ran
    assert stub(ring["ports"][2]).Ping(pb.PingRequest(), timeout=5).received_unix_ns > 0


FAILOVER_SPANS = [(0, 1), (1, 3), (1, 3), (3, 4)]  # head, middle, the middle's standby, tail
FAILOVER_SESSIONS, FAILOVER_TOKENS = 4, 12


def test_sessions_decoding_in_batches_all_fail_over_when_the_middle_hop_stalls(tmp_path):
    """The middle hop stops answering while 4 sessions decode in batches through it: every session's
    batch wait ends at the hop timeout, each continues on the middle's standby, batches form there
    again, and every session ends with the tokens it would have had without the fault."""
    d = save_tiny_model("llama", tmp_path / "llama")
    ports = [0] + [free_port() for _ in FAILOVER_SPANS[1:]]
    hops = [HopRoute(NodeId(Account.from_key(bench_key(i)).address), f"127.0.0.1:{p}", a, b)
            for i, ((a, b), p) in enumerate(zip(FAILOVER_SPANS, ports))]
    params = GenParams(max_tokens=FAILOVER_TOKENS, codec=codec.FP32)
    routes = [JobRoute(JobId(70 + j), "llama", 4, ((hops[0], hops[1], hops[3]),), params, standbys=((hops[2],),))
              for j in range(FAILOVER_SESSIONS)]
    channels = Channels()
    out: list[list[int]] = [[] for _ in range(FAILOVER_SESSIONS)]
    with workers(d, FAILOVER_SPANS, ports, routes, tmp_path) as procs:
        middle = procs[0]
        view, head = StaticPlanView(routes), load_stage(d, *FAILOVER_SPANS[0])
        go = threading.Barrier(FAILOVER_SESSIONS)

        def stall(step, _ids):
            if step == 4:
                os.kill(middle.pid, signal.SIGSTOP)

        def one(j):
            go.wait()
            out[j] = run_replica(head, view.route(JobId(70 + j)), 0, _prompt(j), Signer(bench_key(0)),
                                 config=WorkerConfig(hop_timeout_s=2.0), channels=channels,
                                 on_token=stall if j == 0 else None)

        threads = [threading.Thread(target=one, args=(j,)) for j in range(FAILOVER_SESSIONS)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
            standby_batched = _batched(ports[2])
        finally:
            os.kill(middle.pid, signal.SIGCONT)
            channels.close()
    full = AutoModelForCausalLM.from_pretrained(d).eval()
    for j in range(FAILOVER_SESSIONS):
        want = full.generate(torch.tensor([_prompt(j)]), max_new_tokens=FAILOVER_TOKENS, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
        assert out[j] == want[0, 3 + j:].tolist(), f"session {j}"
    assert standby_batched > 0  # the sessions batched again on the standby
