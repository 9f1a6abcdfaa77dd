"""Reorgs and chain identity on a real anvil (issue: nodes hold up; findings 19 and 20).

A reorg is made with anvil's snapshot/revert: an event is mined and read, the chain is rolled
back, and a different transaction is mined at the same height. The follower must notice that
the block it read left the canonical chain and deliver the new one.
"""

from __future__ import annotations

import pytest
from web3 import Web3

from chain import devnet
from chain.testing import clients, deploy_fresh
from proto.errors import ConfigError
from worker.node.state import ChainIdentity, claim

pytestmark = pytest.mark.integration


def _names(deployed, cursor, confirmations=0):
    got: list[str] = []
    deployed.follower(cursor, names=["ModelRegistered"], confirmations=confirmations).run_once(
        lambda ev: got.append(ev.args["name"]))
    return got


def test_follower_delivers_the_event_a_reorg_put_in_place_of_one_it_read(deployed, anvil_w3, tmp_path):
    cursor = tmp_path / "cursor.json"
    assert _names(deployed, cursor) == []
    old, new = clients(deployed, 2, first=10)  # two senders: a revert leaves a sender's nonce cache stale
    snap = anvil_w3.provider.make_request("evm_snapshot", [])["result"]
    old.register_model("on-the-old-fork", 2, 4096, b"\1" * 32)
    assert _names(deployed, cursor) == ["on-the-old-fork"]
    anvil_w3.provider.make_request("evm_revert", [snap])
    new.register_model("on-the-new-fork", 2, 4096, b"\1" * 32)  # same height, another block
    assert _names(deployed, cursor) == ["on-the-new-fork"]
    assert _names(deployed, cursor) == []  # and only once


def test_follower_waits_for_confirmations(deployed, anvil_w3, tmp_path):
    cursor = tmp_path / "cursor.json"
    _names(deployed, cursor, confirmations=2)
    deployed.register_model("fresh", 2, 4096, b"\1" * 32)
    assert _names(deployed, cursor, confirmations=2) == []  # 0 blocks on top of it
    anvil_w3.provider.make_request("anvil_mine", [2])
    assert _names(deployed, cursor, confirmations=2) == ["fresh"]


def test_node_state_is_keyed_by_chain_and_refused_on_another(anvil_w3, tmp_path):
    """A devnet restarted and redeployed by the same key gets the same chain id and contract
    addresses; only the genesis hash tells the chains apart. State from the first must not be
    resumed on the second."""
    first = deploy_fresh(anvil_w3).deployment
    other = devnet.start_anvil(log_file=tmp_path / "anvil2.log")
    try:
        w3b = Web3(Web3.HTTPProvider(other.rpc_url))
        again = ChainIdentity.of(w3b, first)  # same chain id and addresses, another genesis
        ident = ChainIdentity.of(anvil_w3, first)
        assert (again.chain_id, again.job_market) == (ident.chain_id, ident.job_market)
        assert again.genesis_hash != ident.genesis_hash and again.key != ident.key
        state = tmp_path / "state"
        state.mkdir()
        claim(state, ident)
        claim(state, ident)  # the same chain again: fine
        with pytest.raises(ConfigError, match="belongs to another chain"):
            claim(state, again)
    finally:
        devnet.stop_anvil(other)
