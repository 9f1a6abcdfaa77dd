"""Ring generation through real worker processes on 127.0.0.1 (tiny model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import torch
from eth_account import Account

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from proto.types import JobId, NodeId
from tessera.procs import stop_processes
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView
from worker.ring import run_replica
from worker.signing import Signer

sys.path.insert(0, str(Path(__file__).parent))
from peers import Sender
from test_worker_tiny import TinyLM, TinyStage, save

from chain.devnet import free_port as _free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tessera.cli.main", "operator", "run"]
LOADER = str(Path(__file__).parent / "test_worker_tiny.py") + ":load_stage"
SPANS = [(0, 2), (2, 5), (5, 6)]
PROMPT = [5, 17, 42, 8]




def _route(job, keys, ports, params, spans=SPANS) -> JobRoute:
    hops = tuple(HopRoute(NodeId(Account.from_key(k).address), f"127.0.0.1:{p}", a, b)
                 for k, p, (a, b) in zip(keys, ports, spans))
    return JobRoute(JobId(job), "tiny", 6, (hops,), params)


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """Two worker processes serving [2, 5) and [5, 6); the test process is the head [0, 2)."""
    tmp = tmp_path_factory.mktemp("ring")
    model_dir = save(tmp / "tiny")
    keys = ["0x" + f"{i + 1:064x}" for i in range(3)]
    ports = [0] + [_free_port() for _ in range(2)]
    view = StaticPlanView([
        _route(1, keys, ports, GenParams(max_tokens=12, codec=codec.FP32)),
        _route(2, keys, ports, GenParams(max_tokens=12, temperature_milli=900, seed=1234, codec=codec.FP32)),
        _route(3, keys, ports, GenParams(max_tokens=3, codec=codec.FP32)),
        _route(4, keys, ports, GenParams(max_tokens=3, codec=codec.FP32)),
        _route(5, keys, ports, GenParams(max_tokens=12, codec=codec.INT8_OUTLIER)),
    ])
    eos = TinyLM().eval().greedy(PROMPT, 3)[2]
    view.add(_route(6, keys, ports, GenParams(max_tokens=12, codec=codec.FP32, eos_token_ids=(eos,))))
    plan = tmp / "plan.json"
    view.to_file(plan)
    procs = []
    try:
        for (a, b), key, port in zip(SPANS[1:], keys[1:], ports[1:]):
            cmd = [*WORKER, "--plan-file", str(plan), "--model-dir", str(model_dir), "--start", str(a),
                   "--end", str(b), "--port", str(port), "--private-key", key, "--loader", LOADER,
                   "--session-ttl-s", "60"]
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        for p in procs:
            line = p.stdout.readline()
            assert line.startswith("READY"), f"worker did not start: {line!r}"
        yield {"view": view, "keys": keys, "ports": ports, "model": TinyLM().eval(), "plan": plan}
    finally:
        stop_processes(procs)


def _head(ring, job, config=None):
    stage = TinyStage(ring["model"], *SPANS[0])
    return run_replica(stage, ring["view"].route(JobId(job)), 0, PROMPT, Signer(ring["keys"][0]), config=config)


def test_three_processes_produce_the_unsplit_greedy_tokens(ring):
    assert _head(ring, 1) == ring["model"].greedy(PROMPT, 12)


def test_temperature_sampling_matches_a_single_node_run(ring):
    route = ring["view"].route(JobId(2))
    whole = JobRoute(route.job_id, "tiny", 6, ((HopRoute(route.replicas[0][0].node, "-", 0, 6),),), route.params)
    local = run_replica(TinyStage(ring["model"], 0, 6), whole, 0, PROMPT, Signer(ring["keys"][0]))
    assert _head(ring, 2) == local
    assert local != ring["model"].greedy(PROMPT, 12)  # temperature 0.9 really samples


def test_generation_stops_after_the_end_of_sequence_token(ring):
    greedy = ring["model"].greedy(PROMPT, 12)
    (eos,) = ring["view"].route(JobId(6)).params.eos_token_ids
    assert _head(ring, 6) == greedy[: greedy.index(eos) + 1]


def test_int8_outlier_codec_keeps_greedy_tokens(ring):
    assert _head(ring, 5) == ring["model"].greedy(PROMPT, 12)


def test_byzantine_head_changes_the_replica_output(ring):
    honest = _head(ring, 4)
    assert _head(ring, 4, WorkerConfig(byzantine=True)) != honest


@pytest.mark.parametrize("job", [4, 5])  # fp32 and int8-outlier codecs
def test_a_head_that_sends_what_its_receipt_does_not_describe_is_refused_at_close(ring, job):
    """The framing attack: the head signs a receipt of its honest output but sends noise. Before,
    the replica finished and a verifier would have blamed hop 1 for the output it made of the noise;
    now hop 1 holds the head's receipt against what arrived and refuses it, naming hop 0."""
    with pytest.raises(ProtocolError, match=r"hop 0 \(0x.*\) sent activations its receipt does not describe"):
        _head(ring, job, WorkerConfig(byzantine=True, byzantine_frame=True))
    assert _head(ring, job) == ring["model"].greedy(PROMPT, 12 if job == 5 else 3)  # honest runs still pass


def _stub(ring, i):
    return pb_grpc.WorkerServiceStub(grpc.insecure_channel(f"127.0.0.1:{ring['ports'][i]}"))


def test_malformed_payload_is_refused_and_the_worker_keeps_serving(ring):
    good = codec.encode(torch.zeros(1, 1, 32), codec.FP32)
    bad = codec.Encoded(codec.FP32, (1, 1, 32), 64, good.data[:-4])  # one value short
    peer = Sender(3, ring["keys"][1])  # the planned predecessor of the tail
    with pytest.raises(grpc.RpcError) as err:
        list(_stub(ring, 2).Forward(iter([peer.open(), peer.step(0, bad)])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    peer = Sender(3, ring["keys"][1])
    answers = list(_stub(ring, 2).Forward(iter([peer.open(), peer.step(0, good)])))
    assert len(answers[1].ids) == 1 and answers[1].upstream
    assert _head(ring, 1) == ring["model"].greedy(PROMPT, 12)


def test_info_and_ping_describe_the_worker(ring):
    info = _stub(ring, 1).Info(pb.InfoRequest())
    assert (info.start, info.end, info.num_blocks) == (2, 5, 6)
    assert info.node == Account.from_key(ring["keys"][1]).address
    assert codec.INT8_OUTLIER in info.codecs
    assert _stub(ring, 1).Ping(pb.PingRequest(sent_unix_ns=123)).sent_unix_ns == 123


def test_a_node_runs_the_sub_span_the_plan_gives_it(ring, tmp_path):
    """The worker that loaded [2, 5) is planned for [3, 5) only: it loads that sub-span and
    the replica still reproduces the unsplit greedy tokens; a span outside what it serves
    is refused."""
    keys, ports = ring["keys"], ring["ports"]
    spans = [(0, 3), (3, 5), (5, 6)]
    route = _route(7, keys, ports, GenParams(max_tokens=8, codec=codec.FP32), spans=spans)
    ring["view"].add(route)
    bad = _route(8, keys, ports, GenParams(max_tokens=8, codec=codec.FP32), spans=[(0, 1), (1, 5), (5, 6)])
    ring["view"].add(bad)
    ring["view"].to_file(ring["plan"])
    got = run_replica(TinyStage(ring["model"], 0, 3), route, 0, PROMPT, Signer(keys[0]))
    assert got == ring["model"].greedy(PROMPT, 8)
    with pytest.raises(ProtocolError, match=r"blocks \[1, 5\) but it serves \[2, 5\)"):
        run_replica(TinyStage(ring["model"], 0, 1), bad, 0, PROMPT, Signer(keys[0]))
