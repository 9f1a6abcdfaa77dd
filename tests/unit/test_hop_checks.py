"""What a hop checks before it spends anything on a message (no network): the signer of a large
input, the memory a step needs, low-s signatures, the signing domain, plan-file reads, limits."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from eth_account import Account

from proto.errors import ConfigError, ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import JobId, NodeId
from worker import codec, wire
from worker.config import WorkerConfig
from worker.planview import GenParams, HopRoute, JobRoute, StaticPlanView
from worker.ring import HopRuntime, Stream
from worker.ring.link import message
from worker.sessions import SessionError
from worker.signing import HALF_N, Signer, verify
from worker.stage import StageSpec

KEYS = ["0x" + f"{i + 31:064x}" for i in range(3)]  # hop 0, hop 1 (this node), a stranger
ADDR = [Account.from_key(k).address for k in KEYS]
DOMAIN = wire.domain_separator(0, wire.ZERO_ADDRESS)


class CountingTail:
    """A tail over blocks [1, 3) that counts how often it runs: logits = x @ W."""

    spec = StageSpec("toy", 3, 1, 3, "causal-lm")
    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self):
        self.calls, self.w = 0, torch.randn(8, 10, generator=torch.Generator().manual_seed(0))

    def new_cache(self):
        return []

    def cache_bytes(self, cache):
        return 4 * 8 * len(cache)

    def forward(self, x, cache=None, *, last=False):
        self.calls += 1
        cache.extend(range(x.shape[1]))
        return (x @ self.w)[:, -1:] if last else x @ self.w


def _runtime(**config) -> HopRuntime:
    hops = (HopRoute(NodeId(ADDR[0]), "-", 0, 1), HopRoute(NodeId(ADDR[1]), "-", 1, 3))
    route = JobRoute(JobId(7), "toy", 3, (hops,), GenParams(max_tokens=4, codec=codec.FP32))
    return HopRuntime(WorkerConfig(**config), CountingTail(), StaticPlanView([route]), Signer(KEYS[1]))


def _open(nonce: bytes, key: str = KEYS[0]) -> pb.HopMessage:
    return Signer(key).sign(message(7, 0, 0, 0, pb.KIND_OPEN, session=nonce, sent_unix_ms=time.time_ns() // 10**6),
                            DOMAIN)


def _step(nonce: bytes, tokens: int, key: str = KEYS[0]) -> pb.HopMessage:
    x = torch.randn(1, tokens, 8, generator=torch.Generator().manual_seed(tokens))
    return Signer(key).sign(message(7, 0, 0, 0, pb.KIND_STEP, payload=codec.encode(x, codec.FP32), session=nonce),
                            DOMAIN)


def test_finding6_a_forged_large_input_is_refused_before_the_stage_runs():
    """Regression (finding 6): a forged 1,500-token step ran the whole stage (20 s) before it was refused."""
    rt, stream, nonce = _runtime(), Stream(), os.urandom(32)
    rt.handle(_open(nonce), stream)
    with pytest.raises(ProtocolError, match="plan names"):
        rt.handle(_step(nonce, 1500, key=KEYS[2]), stream)
    assert rt.stage.calls == 0 and stream.session is None


def test_a_small_decode_step_is_still_checked_while_it_runs_and_never_answered_if_forged():
    rt, stream, nonce = _runtime(), Stream(), os.urandom(32)
    rt.handle(_open(nonce), stream)
    with pytest.raises(ProtocolError, match="plan names"):
        rt.handle(_step(nonce, 1, key=KEYS[2]), stream)
    assert rt.stage.calls == 1  # overlapped with the check, and nothing left the node


def test_finding14_a_step_past_the_memory_cap_is_refused_before_the_stage_runs():
    """Regression (finding 14): the cap was checked after the prefill, so every new session at the cap
    still ran its whole prefill. Now the step's memory is reserved first."""
    rt, stream, nonce = _runtime(session_max_bytes=64 << 10), Stream(), os.urandom(32)
    rt.handle(_open(nonce), stream)
    with pytest.raises(SessionError, match="cap of 65536 bytes"):
        rt.handle(_step(nonce, 1500), stream)  # 1,500 x 8 floats x 2 blocks of cache alone pass 64 KiB
    assert rt.stage.calls == 0 and len(rt.sessions) == 0
    rt.handle(_open(os.urandom(32)), Stream())  # the node still serves


def test_finding10_high_s_signatures_are_refused():
    """Regression (finding 10): the malleable twin (r, n - s) of a valid signature was accepted too."""
    msg = _step(b"\0" * 32, 1)
    r, s, v = msg.signature[:32], int.from_bytes(msg.signature[32:64], "big"), msg.signature[64]
    twin = pb.HopMessage()
    twin.CopyFrom(msg)
    twin.signature = r + (2 * HALF_N + 1 - s).to_bytes(32, "big") + bytes([55 - v])  # n = 2 * HALF_N + 1
    from eth_account.messages import encode_defunct

    from worker.signing import digest
    assert Account.recover_message(encode_defunct(primitive=digest(msg, DOMAIN)), signature=twin.signature) == ADDR[0]
    verify(msg, ADDR[0], DOMAIN)
    with pytest.raises(ProtocolError, match="high s"):
        verify(twin, ADDR[0], DOMAIN)


def test_finding9_a_signature_is_valid_on_its_own_deployment_only():
    """Regression (finding 9): signatures carried no chain id or JobMarket, and job ids restart at 1."""
    mainnet = wire.domain_separator(1, "0x" + "11" * 20)
    msg = Signer(KEYS[0]).sign(message(7, 0, 0, 0, pb.KIND_OPEN, session=b"\1" * 32), mainnet)
    verify(msg, ADDR[0], mainnet)
    for other in (wire.domain_separator(2, "0x" + "11" * 20), wire.domain_separator(1, "0x" + "22" * 20)):
        with pytest.raises(ProtocolError, match="signed by"):
            verify(msg, ADDR[0], other)


def test_finding8_unknown_job_ids_do_not_reread_an_unchanged_plan_file(tmp_path, monkeypatch):
    """Regression (finding 8): every unknown job id re-read and parsed the plan file."""
    plan = tmp_path / "plan.json"
    StaticPlanView([JobRoute(JobId(1), "toy", 3, ((HopRoute(NodeId(ADDR[0]), "-", 0, 3),),))]).to_file(plan)
    view = StaticPlanView.from_file(plan)
    reads = []
    real = json.loads
    monkeypatch.setattr(json, "loads", lambda text: reads.append(1) or real(text))
    for job in range(2, 500):
        with pytest.raises(ProtocolError, match="not in the plan"):
            view.route(JobId(job))
    assert reads == []
    view.min_reload_s = 0.0
    routes = json.loads(plan.read_text())
    routes["routes"][0]["job_id"] = "2"
    plan.write_text(json.dumps(routes) + " ")  # a changed file is read again
    assert view.route(JobId(2)).job_id == 2


def test_finding15_the_payload_limit_fits_inside_a_grpc_message():
    """Regression (finding 15): a 256 MiB payload limit above the 64 MiB message limit could never apply."""
    cfg = WorkerConfig()
    assert cfg.max_payload_bytes < cfg.max_message_bytes
    assert WorkerConfig(max_message_bytes=4 << 20).max_payload_bytes < 4 << 20
    with pytest.raises(ConfigError, match="can never apply"):
        WorkerConfig.build(max_payload_bytes=256 << 20)


@pytest.mark.parametrize("text", ["²", "7" * 5000, "", "-1", "1e3", " 7", "0x07", str(2**256)])
def test_finding11_job_ids_are_78_ascii_digits_below_2_256(text):
    with pytest.raises(wire.MessageError, match="job_id") as err:
        wire.job_id(text)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200


def test_finding12_untrusted_text_is_one_short_line():
    assert wire.safe("7\nFORGED 2024 INFO worker: all good") == "7\\nFORGED 2024 INFO worker: all good"
    long = wire.safe("9" * 200_000)
    assert len(long) < 120 and long.endswith("(200000 chars)")
    assert wire.safe("job 7") == "job 7"
