"""Plans from the on-chain registry are accepted by the JobMarket (real anvil)."""

from __future__ import annotations

import json

import pytest

from chain.deploy import save_deployment
from chain.testing import clients
from proto.types import Plan
from router.plan import plan_replicas
from router.view import NetworkView
from tessera.cli.main import main

pytestmark = pytest.mark.integration

# (start, end, advertised block-tokens/s): overlapping spans, so plans use sub-spans
SPANS = [(0, 12, 400), (0, 6, 100), (4, 12, 100), (0, 8, 300), (6, 12, 200), (2, 10, 50), (0, 12, 20)]


@pytest.fixture
def network(deployed):
    deployed.register_model("r", 12, 4096, b"\x02" * 32)
    nodes = clients(deployed, len(SPANS))
    for j, (c, (s, e, thr)) in enumerate(zip(nodes, SPANS)):
        c.register_node("r", s, e, f"127.0.0.1:{7000 + j}", 10**18, throughput=thr, price_per_block=j)
    return deployed


def test_registry_plan_is_accepted_by_the_job_market(network):
    view = NetworkView(network.list_nodes, lambda m: network.get_model(m).num_blocks)
    for mode in ("latency", "throughput", "price"):
        rp = plan_replicas(view.snapshot("r"), 3, mode)
        job = network.submit_job(rp.plan, b"hi", max_tokens=2, fee_wei=10**15)
        assert network.get_job(job).num_replicas == 3


def test_cli_plans_from_the_deployment(network, tmp_path, monkeypatch, capsys):
    dep = tmp_path / "deployment.json"
    save_deployment(network.deployment, dep)
    monkeypatch.setenv("TESSERA_DEPLOYMENT", str(dep))
    assert main(["router", "plan", "--model", "r", "--replicas", "2", "--no-probe", "--json"]) == 0
    plan = Plan.from_json(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["plan"])
    network.submit_job(plan, b"hi", max_tokens=2, fee_wei=10**15)
    assert main(["router", "advise", "--model", "r", "--max-blocks", "4", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["capacity"]) == 12
