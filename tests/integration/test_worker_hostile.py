"""Hostile clients against real worker processes on 127.0.0.1: replays, foreign signatures, jobs
that break their plan, malformed fields, forged log lines, prompts past the context, oversize
payloads. Each test is named after the finding it guards (the issue "Nodes hold up against
silent, hostile and failing peers")."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc
import pytest
import torch

from proto.errors import JobInputError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams, StaticPlanView
from worker.ring import run_replica
from worker.ring.link import message
from worker.signing import Signer
from worker.wire import domain_separator

sys.path.insert(0, str(Path(__file__).parent))
from peers import KEYS, PROMPT, HeldStream, Sender, free_port, head_stage, hidden, refusal, ring_workers, route, stub  # noqa: E402

pytestmark = pytest.mark.integration
INVALID, DENIED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """Hop 1 [2, 5) and the tail [5, 6) as worker processes (payloads up to 1 MiB in 2 MiB messages)."""
    tmp = tmp_path_factory.mktemp("hostile")
    ports = [0, free_port(), free_port()]
    view = StaticPlanView([route(j, ports, GenParams(max_tokens=6, codec=codec.FP32)) for j in range(1, 20)])
    with ring_workers(tmp, view, ports, "--max-message-bytes", str(2 << 20), "--max-payload-bytes",
                      str(1 << 20)) as procs:
        yield {"view": view, "ports": ports, "tmp": tmp, "procs": procs}


def _head(ring, job: int, prompt=PROMPT) -> list[int]:
    return run_replica(head_stage(), ring["view"].route(JobId(job)), 0, prompt, Signer(KEYS[0]),
                       config=WorkerConfig())


def _tail(ring) -> int:
    return ring["ports"][2]


def _one_line(err: grpc.RpcError, code: grpc.StatusCode, match: str) -> None:
    details = err.details() or ""
    assert err.code() == code, (err.code(), details)
    assert match in details, details
    assert "\n" not in details and "Traceback" not in details and len(details) < 600, details


def test_finding5_a_recorded_session_replayed_on_a_new_stream_computes_nothing(ring):
    """Regression: OPEN, steps and CLOSE recorded off the wire and replayed byte for byte on a new
    stream were accepted and computed again."""
    peer = Sender(2)
    recorded = [peer.open(), peer.step(0, hidden(4)), peer.step(1, hidden(1)), peer.close(2)]
    answers = list(stub(_tail(ring)).Forward(iter(recorded)))
    assert [len(a.ids) for a in answers] == [0, 1, 1, 0]
    replay = [type(m).FromString(m.SerializeToString()) for m in recorded]
    _one_line(refusal(_tail(ring), replay), DENIED, "OPEN replayed")
    _one_line(refusal(_tail(ring), replay[1:]), DENIED, "no session opened on this stream")
    assert stub(_tail(ring)).Info(pb.InfoRequest()).sessions == 0


def test_finding7_replayed_opens_neither_fill_the_table_nor_hold_a_replica(ring):
    """Regression: 64 replayed OPENs filled the session table ("worker is full" for honest jobs), and
    whoever opened a job/replica first kept it until the TTL."""
    squatter = Sender(3)  # an OPEN of job 3 replica 0, recorded, first delivered by the attacker
    held = HeldStream(grpc.insecure_channel(f"127.0.0.1:{_tail(ring)}"))
    assert held.send(squatter.open()).upstream
    record = squatter.open()
    for _ in range(64):
        _one_line(refusal(_tail(ring), [record]), DENIED, "OPEN replayed")
    hop1 = ring["ports"][1]
    for _ in range(64):
        _one_line(refusal(hop1, [Sender(4, key=KEYS[0], hop=0).open(sent_unix_ms=1)]), DENIED, "outside its window")
    assert _head(ring, 3) == _head(ring, 1)  # the honest head's fresh OPEN replaces the squatter's session
    held.cancel()
    assert stub(_tail(ring)).Info(pb.InfoRequest()).sessions == 0


def test_finding9_a_signature_made_for_another_deployment_is_refused(ring):
    """Regression: signatures named no chain id or JobMarket and job ids restart at 1, so a signature
    was valid on every deployment."""
    other = Sender(5, domain=domain_separator(1, "0x" + "ab" * 20))
    _one_line(refusal(_tail(ring), [other.open()]), DENIED, "signed by")
    assert list(stub(_tail(ring)).Forward(iter([Sender(5).open()])))[0].upstream  # its own domain passes


@pytest.mark.parametrize("case", ["fp16 on an fp32 job", "batch 2", "OPEN at step 7"])
def test_finding10_a_job_is_held_to_its_plan_at_the_hop(ring, case):
    """Regression: an fp16 payload on an fp32 job, batch size 2 and an OPEN at step 7 were accepted."""
    peer = Sender(6)
    if case == "OPEN at step 7":
        _one_line(refusal(_tail(ring), [peer.open(step=7)]), INVALID, "OPEN must carry step 0")
        return
    enc = hidden(2, cid=codec.FP16) if case.startswith("fp16") else codec.encode(torch.zeros(2, 1, 32), codec.FP32)
    _one_line(refusal(_tail(ring), [peer.open(), peer.step(0, enc)]), INVALID,
              "codec 1 block 64; the job's plan names codec 0" if case.startswith("fp16") else "(batch 1)")


def _bad_step(field: str) -> tuple[list, str]:
    peer = Sender(7)
    if field.startswith("job id"):
        msg = peer.open()
        msg.job_id = "²" if field == "job id ²" else "7" * 5000
        return [msg], "job_id"
    shapes = {"hidden size 31": (1, 1, 31), "2-D": (1, 32), "5-D": (1, 1, 1, 1, 32), "300 dimensions": (1,) * 300}
    if field == "codec 256":
        msg = peer.step(0, hidden(1))
        msg.payload.codec = 256
        return [peer.open(), msg], "unknown codec id 256"
    enc = codec.encode(torch.zeros(*shapes[field]), codec.FP32) if field != "300 dimensions" else \
        codec.Encoded(codec.FP32, shapes[field], 64, b"\0" * 4)
    want = "1 to 8 positive dimensions" if field == "300 dimensions" else "this model's hops pass (1, tokens, 32)"
    return [peer.open(), peer.step(0, enc) if field != "300 dimensions" else _raw_step(peer, enc)], want


def _raw_step(peer: Sender, enc: codec.Encoded):
    """A STEP whose payload cannot even be hashed by the codec's header (more than 255 dimensions)."""
    msg = message(peer.job, 0, 1, 0, pb.KIND_STEP, session=peer.nonce)
    msg.payload.CopyFrom(pb.Tensor(codec=enc.codec, shape=list(enc.shape), block=enc.block, data=enc.data))
    msg.payload_hash = b"\1" * 32
    return peer.signer.sign(msg, peer.domain)


@pytest.mark.parametrize("field", ["job id ²", "job id of 5,000 digits", "codec 256", "300 dimensions",
                                   "hidden size 31", "2-D", "5-D"])
def test_finding11_bad_fields_are_invalid_argument_with_a_one_line_message(ring, field):
    """Regression: these got UNKNOWN with raw Python/torch text (raised before the signature check)."""
    msgs, want = _bad_step(field)
    _one_line(refusal(_tail(ring), msgs), INVALID, want)


def test_finding12_a_job_id_cannot_forge_or_flood_the_nodes_log(ring):
    """Regression: a job id with a newline wrote a forged line into the log; a 200 KB one was logged whole."""
    time.sleep(1.1)  # refusal lines are rate-limited per second; start a fresh second
    for job_id in ["7\n2030-01-01 00:00:00,000 INFO worker.ring.hop: FORGED", "9" * 200_000]:
        msg = Sender(8).open()
        msg.job_id = job_id
        _one_line(refusal(_tail(ring), [msg]), INVALID, "job_id")
    assert _head(ring, 8)  # the node keeps serving
    lines = (ring["tmp"] / "worker2.log").read_text().splitlines()
    assert any("refused job 7\\n2030-01-01" in line for line in lines)  # logged, escaped on one line
    assert not any(line.startswith("2030-01-01") for line in lines)
    assert max(len(line) for line in lines) < 2000


def test_finding13_a_prompt_past_the_context_is_refused_and_the_head_is_told_not_to_retry(ring):
    """Regression: a model with a 256-token context accepted 4,000- and 30,000-token prompts. The
    refusal is deterministic, so it reaches the head as JobInputError (the daemon does not retry it)."""
    with pytest.raises(JobInputError, match="context of 64 positions"):
        _head(ring, 9, prompt=[5] * 100)
    with pytest.raises(JobInputError, match="5 still to generate"):
        _head(ring, 10, prompt=[5] * 60)  # 60 + 6 - 1 > 64
    head = Sender(11, key=KEYS[0], hop=0)  # straight to hop 1: 5,000 tokens of activations
    _one_line(refusal(ring["ports"][1], [head.open(), head.step(0, hidden(5000))]), INVALID, "context of 64 positions")
    assert len(_head(ring, 12, prompt=[5] * 58)) == 6  # 58 + 6 - 1 = 63 fits


def test_finding15_a_payload_past_the_limit_is_refused_with_a_clear_message(ring):
    """Regression: the payload limit sat above gRPC's message limit and could never trigger."""
    peer = Sender(13)
    big = hidden(9000)  # 9000 x 32 fp32 values = 1.1 MiB: past the 1 MiB payload limit, inside a 2 MiB message
    _one_line(refusal(_tail(ring), [peer.open(), peer.step(0, big)]), INVALID, "exceeds this node's limit of 1048576")
