"""Pure parts of the operator daemon and the requester: config, ledger, the decoded settlement."""

from __future__ import annotations

from pathlib import Path

import pytest

from chain.records import JobSettlement
from proto.errors import ConfigError
from proto.types import ALL_CAPS, CAP_INT8, Hop, NodeId, Plan, Replica, pack_plan
from tessera.jobresult import JobResult
from worker.node.book import JobBook, JobEntry
from worker.node.config import check_weights_caps, load

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "nodes"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_example_node_configs_load(path):
    node, worker = load(path)
    assert node.dev_account is not None
    assert 0 <= worker.start < worker.end <= 30


def test_node_config_errors_say_what_to_fix(tmp_path):
    bad = tmp_path / "node.toml"
    bad.write_text("[nodes]\nkey = 1\n")
    with pytest.raises(ConfigError, match=r"unknown table.*\[node\] and \[worker\]"):
        load(bad)
    bad.write_text("[worker]\nport = 99999\n")
    with pytest.raises(ConfigError, match="port"):
        load(bad)
    with pytest.raises(ConfigError, match="no node config"):
        load(tmp_path / "missing.toml")


def test_overrides_replace_only_what_is_given(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text("[worker]\nport = 6000\nstart = 0\nend = 15\n")
    assert load(cfg, port=None)[1].port == 6000
    assert load(cfg, port=7000)[1].port == 7000


def test_job_book_survives_a_restart_and_ignores_replays(tmp_path):
    book = JobBook(tmp_path)
    e = JobEntry(7, ((0, 0), (2, 1)), (2,), 100, 200)
    assert book.add(e)
    assert not book.add(e)  # the same JobSubmitted seen again after a restart
    book.update(7, head_done=(0,), outputs={"2": "00000001"}, salts={"2": "ab" * 32})
    again = JobBook(tmp_path).get(7)
    assert again.head_done == (0,) and again.roles == ((0, 0), (2, 1)) and again.outputs == {"2": "00000001"}
    assert again.heads == (0,)
    JobBook(tmp_path).update(7, closed=True)
    assert JobBook(tmp_path).open_jobs() == []


def _plan() -> Plan:
    a, b, c, d = (NodeId(f"0x{i:040x}") for i in range(1, 5))
    return Plan("m", 30, (Replica((Hop(a, 0, 10), Hop(b, 10, 30))), Replica((Hop(c, 0, 15), Hop(d, 15, 30)))))


def test_settlement_is_decoded_from_jobfinalized_without_assuming_a_replica_count():
    plan = _plan()
    nodes = [h.node for r in plan.replicas for h in r.hops]
    hops = pack_plan(plan)
    words = [0, 0, 0, 5 << 96 | 3 << 192]  # paid | slashed << 96 | outcome << 192
    args = {"jobId": 7, "outcome": 3, "paidMask": 0, "refund": 10, "burnedWei": 5, "hops": words}
    s = JobSettlement.from_events(args, hops, 3, "0xab")
    assert s.outcome == "refunded" and s.paid_replicas == () and s.slashes == {nodes[3]: 5} and s.burned == 5
    res = JobResult(7, "m", plan, 10, "0xcd", {0: "0x01"}, s)
    assert res.outcome == "refunded" and "came with a valid route" in res.reason
    assert res.to_json()["slashed"] == {nodes[3]: "5"}
    assert [v.verdict for v in res.replicas()] == ["undecided", "silent"]
    wide = JobSettlement.from_events({**args, "outcome": 1, "paidMask": 0b10000001,
                                      "hops": [4 | 1 << 192, 6 | 1 << 192, 0, 0]}, hops, 3, "0xab")
    assert wide.paid_replicas == (0, 7) and wide.answer == 0 and wide.payouts == {nodes[0]: 4, nodes[1]: 6}
    with pytest.raises(ValueError):  # one word per hop word, or the event is not this plan's
        JobSettlement.from_events({**args, "hops": words[:3]}, hops, 3, "0xab")


class _View:
    """PlanView stand-in: job 5, where this node is the tail of replica 0 and heads replica 1."""

    def __init__(self, me: str):
        from types import SimpleNamespace

        from worker.planview import HopRoute, JobRoute

        self.req = SimpleNamespace(job_id=5, commit_deadline=100, reveal_deadline=200)
        self._route = JobRoute(5, "m", 4, ((HopRoute(f"0x{1:040x}", "-", 0, 2), HopRoute(me, "-", 2, 4)),
                                           (HopRoute(me, "-", 0, 4),)))

    def request(self, job_id):
        return self.req

    def route(self, job_id):
        return self._route


def test_a_tail_keeps_an_output_that_arrives_before_the_job_event(tmp_path):
    """Regression: a fast replica can finish at the tail before the tail's own event follower
    has seen JobSubmitted; the output must be kept (and committed later), and the replica
    this node heads must still be started exactly once."""
    from worker.node.daemon import NodeDaemon
    from worker.node.health import NodeMetrics

    me = "0x" + "a" * 40
    d = NodeDaemon.__new__(NodeDaemon)
    d.me, d.book, d.view, d.metrics = me, JobBook(tmp_path), _View(me), NodeMetrics()
    started = []
    d._pool = type("Pool", (), {"submit": lambda self, fn, *a: started.append(a)})()
    d._on_output(5, 0, b"\0\0\0\7")
    job = d.book.get(5)
    assert job.outputs == {"0": "00000007"} and len(job.salts["0"]) == 64 and job.tails == (0, 1)
    d._admit(d.view.request(5))  # the event arrives afterwards
    assert started == [(5, 1)]  # head of replica 1 started once, not twice
    d._on_output(5, 0, b"\0\0\0\x08")  # a second output for the same replica is ignored
    assert d.book.get(5).outputs == {"0": "00000007"}


def test_a_job_whose_input_can_never_run_is_tried_once_not_retried(tmp_path):
    """Regression (finding 16): a prompt sent to a classifier was retried 30 times with backoff
    while the error never changed. The head now reports it once and lets the job expire."""
    import threading
    from types import SimpleNamespace

    from worker.node.config import NodeConfig
    from worker.node.daemon import NodeDaemon
    from worker.node.health import NodeMetrics
    from worker.planview import HopRoute, JobRoute
    from worker.stream import TokenHub, TokenSigner

    me = "0x" + "a" * 40
    d = NodeDaemon.__new__(NodeDaemon)
    d.me, d.book, d.cfg = me, JobBook(tmp_path), NodeConfig(head_retries=30, retry_backoff_s=0.01)
    d.metrics = NodeMetrics()
    d.stop_event, d.model_dir = threading.Event(), tmp_path
    d._now = lambda: 0
    req = SimpleNamespace(job_id=5, commit_deadline=100, reveal_deadline=200, input=b"a prompt, not pixels",
                          max_tokens=1)
    route = JobRoute(5, "digits", 2, ((HopRoute(me, "-", 0, 2),),), kind="classifier")
    d.view = SimpleNamespace(request=lambda j: req, route=lambda j: route)
    attempts = []
    d.running = SimpleNamespace(runtime=SimpleNamespace(stages=SimpleNamespace(
        get=lambda a, b: attempts.append((a, b)))), tokens=TokenHub(1, TokenSigner("0x" + "11" * 32)))
    d.book.add(JobEntry(5, ((0, 0),), (0,), 100, 200))
    d._run_head(5, 0)
    assert attempts == []  # refused while decoding the input, before any stage ran
    assert "input refused" in d.book.get(5).note and "multiple of 64" in d.book.get(5).note


def test_node_toml_sets_confirmations_and_websocket(tmp_path):
    from worker.node.config import load

    p = tmp_path / "node.toml"
    p.write_text('[node]\ndev_account = 1\nconfirmations = 6\nws_url = "ws://127.0.0.1:8545"\n'
                 '[worker]\nmodel = "m"\nend = 2\n')
    node, _ = load(p)
    assert (node.confirmations, node.ws_url) == (6, "ws://127.0.0.1:8545")


class _Chain:
    """The chain as a tail's settle loop sees it: one open job, commits recorded."""

    def __init__(self):
        self.commits = []

    def get_job(self, job_id):
        from types import SimpleNamespace

        return SimpleNamespace(status="open", num_replicas=2, committed_mask=0, revealed_mask=0)

    def commit(self, job_id, replica, output, salt, receipts_root=bytes(32), served_mask=None):
        self.commits.append((job_id, replica))


def _tail_with_output(tmp_path, reveal_window_s: int, margin_s: float):
    from worker.node.config import NodeConfig
    from worker.node.daemon import NodeDaemon
    from worker.node.health import NodeMetrics

    d = NodeDaemon.__new__(NodeDaemon)
    d.book, d.cfg, d.chain = JobBook(tmp_path), NodeConfig(reveal_margin_s=margin_s), _Chain()
    d.metrics = NodeMetrics()
    d._now = lambda: 50
    d.book.add(JobEntry(5, ((0, 1),), (0,), 100, 100 + reveal_window_s, outputs={"0": "00000007"},
                        salts={"0": "ab" * 32}))
    return d


def test_a_tail_refuses_to_commit_when_it_could_not_reveal_in_time(tmp_path, caplog):
    """Finding 1: a requester sets a one-second reveal window (and keeps its own replica silent,
    so reveals open only at the commit deadline); a tail that commits there would be slashed for a
    reveal it cannot make. It refuses, says why in its log and ledger, and commits when there is time."""
    d = _tail_with_output(tmp_path, reveal_window_s=1, margin_s=20)
    with caplog.at_level("WARNING"):
        d._settle(d.book.get(5))
        d._settle(d.book.get(5))  # said once, not on every tick
    assert d.chain.commits == []
    assert caplog.text.count("refused to commit") == 1 and "leaves 1 s" in caplog.text
    assert "refused to commit" in d.book.get(5).note
    ok = _tail_with_output(tmp_path / "ok", reveal_window_s=60, margin_s=20)
    ok._settle(ok.book.get(5))
    assert ok.chain.commits == [(5, 0)]


def test_an_int8_node_registered_as_exact_refuses_to_start():
    """A requester who pays for fp32 (JobParams weights = exact) must get fp32: a node running
    [worker] weights = "int8-mixed" may only advertise CAP_INT8."""
    with pytest.raises(ConfigError, match="--weights int8"):
        check_weights_caps("int8-mixed", ALL_CAPS, "0xabc")
    check_weights_caps("int8-mixed", CAP_INT8 | 1, "0xabc")
    check_weights_caps("fp32", ALL_CAPS, "0xabc")  # exact weights serve int8-allowed jobs too
