"""Pure parts of the operator daemon and the requester: config, ledger, payouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.errors import ConfigError
from tessera.requester import payouts
from tessera.types import Hop, NodeId, Plan, Replica
from worker.node.book import JobBook, JobEntry
from worker.node.config import load

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


def test_payouts_are_pro_rata_by_blocks_and_sum_to_the_fee():
    plan = _plan()
    fee = 10**16 + 7  # not divisible: the remainder goes to the first agreeing tail
    paid = payouts(plan, fee, (0, 1))
    assert sum(paid.values()) == fee
    per_block = fee // 60
    assert paid[plan.replicas[0].hops[0].node] == 10 * per_block
    assert paid[plan.replicas[1].hops[0].node] == 15 * per_block
    assert paid[plan.replicas[0].tail.node] == 20 * per_block + fee - 60 * per_block
    assert payouts(plan, fee, ()) == {}
    only = payouts(plan, fee, (1,))
    assert set(only) == {plan.replicas[1].hops[0].node, plan.replicas[1].tail.node}
