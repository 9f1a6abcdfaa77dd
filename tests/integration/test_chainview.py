"""The chain plan view on a real anvil: what a hop message for an unknown job may cost, bounded
caches, refreshed endpoints, deadlines and the signing domain of routes (finding 8 of the issue
"Nodes hold up against silent, hostile and failing peers")."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from eth_account import Account
from web3 import Web3

from chain import devnet
from chain.client import TesseraChain
from proto.errors import ProtocolError
from proto.types import JobId
from worker.node.chainview import ChainPlanView
from worker.wire import domain_separator

pytestmark = pytest.mark.integration


def _view(anvil: str, deployed: TesseraChain, tmp_path, **kw) -> tuple[ChainPlanView, list[str]]:
    """A view over its own connection, whose JSON-RPC methods are recorded."""
    w3 = Web3(Web3.HTTPProvider(anvil))
    calls: list[str] = []
    real = w3.provider.make_request
    w3.provider.make_request = lambda method, params: calls.append(method) or real(method, params)
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2}))
    manifest = SimpleNamespace(name="m", num_blocks=30, kind="causal-lm")
    chain = TesseraChain(w3, deployed.deployment, Account.from_key(devnet.dev_key(1)))
    return ChainPlanView(chain, manifest, tmp_path, deployed.model_id("m"), **kw), calls


def test_finding8_an_unknown_job_costs_a_lookup_only_when_a_registered_node_asks(anvil, deployed, nodes_3x3,
                                                                                  tmp_path):
    """Regression: each unknown job id in an unsigned message made the view scan eth_getLogs from
    the deployment block, and its caches grew without bound."""
    nodes, plan = nodes_3x3
    job = deployed.submit_job(plan, b"prompt", max_tokens=2, fee_wei=10**15)
    view, calls = _view(anvil, deployed, tmp_path, miss_retry_s=60)
    stranger = Account.create().address
    calls.clear()
    for unknown in range(1000, 1100):
        with pytest.raises(ProtocolError, match="not a registered node"):
            view.route(JobId(unknown), stranger)
    assert "eth_getLogs" not in calls and calls.count("eth_call") == 2  # one snapshot: nodeCount + one page
    node = nodes[0].address
    for _ in range(20):
        with pytest.raises(ProtocolError, match="not on chain"):
            view.route(JobId(999), node)
    assert calls.count("eth_getLogs") == 1  # a miss is remembered
    route = view.route(JobId(job), node)
    assert calls.count("eth_getLogs") == 2 and route.replicas[0][0].node == node
    view.route(JobId(job), node)
    assert calls.count("eth_getLogs") == 2  # cached
    assert route.domain == domain_separator(deployed.deployment.chain_id, deployed.deployment.job_market)
    assert abs(route.deadline - (time.time() + 600)) < 60  # the commit window, on this machine's clock


def test_finding8_caches_are_bounded_and_endpoints_are_read_again(anvil, deployed, nodes_3x3, tmp_path):
    nodes, plan = nodes_3x3
    view, calls = _view(anvil, deployed, tmp_path, max_jobs=3, nodes_ttl_s=0.5)
    for _ in range(6):
        job = deployed.submit_job(plan, b"prompt", max_tokens=2, fee_wei=10**15)
        view.add_request(deployed.get_request(job))
    assert len(view._requests) == 3 and len(view._routes) <= 3
    before = calls.count("eth_call")
    time.sleep(0.6)
    view.route(JobId(job))
    assert calls.count("eth_call") > before  # the nodes (and their endpoints) were read again
