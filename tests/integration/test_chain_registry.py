"""ModelRegistry and NodeRegistry on a real anvil: rules, named errors, unbonding, re-entrancy."""

from __future__ import annotations

import pytest

from chain.build import load_artifact
from chain.devnet import advance_time
from chain.testing import clients, setup_3x3
from proto.errors import ContractError
from proto.types import CAP_EXACT, encode_output, model_id

pytestmark = pytest.mark.integration

ETH = 10**18
SALT = b"\x09" * 32


def raises(name: str):
    return pytest.raises(ContractError, match=rf"^{name}\(")


def test_models_register_read_deprecate(deployed):
    other = clients(deployed, 1)[0]
    mid = deployed.register_model("llm", 30, 4096, b"\x07" * 32, b"\x08" * 32, b"\x09" * 32)
    assert deployed.deployment.publisher == deployed.address and mid == model_id("llm", deployed.address)
    m = other.get_model("llm")  # a bare name: the deployment's publisher
    assert (m.num_blocks, m.context_length, m.weights_root, m.publisher, m.deprecated) == \
        (30, 4096, b"\x07" * 32, deployed.address, False)
    squat = other.register_model("llm", 3, 1, b"\0" * 32)  # anyone may use the name, under their own address
    assert squat != mid and other.get_model(f"{other.address}/llm").num_blocks == 3
    assert other.get_model("llm").num_blocks == 30  # the squat does not shadow the project's model
    with raises("ModelAlreadyRegistered"):
        other.register_model("llm", 3, 1, b"\0" * 32)
    with raises("ModelInvalid"):
        deployed.register_model("", 3, 4096, b"\0" * 32)
    with raises("ModelInvalid"):
        deployed.register_model("a/b", 3, 4096, b"\0" * 32)
    with raises("ModelUnknown"):
        deployed.get_model("nope")
    with raises("ModelNotPublisher"):
        other.deprecate("llm")
    deployed.deprecate("llm")
    assert deployed.get_model(mid).deprecated
    with raises("ModelIsDeprecated"):
        other.register_node("llm", 0, 10, "h:1", ETH)


def test_node_registration_rules_and_listing(deployed):
    deployed.register_model("m", 30, 4096, b"\1" * 32)
    a, b = clients(deployed, 2)
    with pytest.raises(ContractError, match=r"^NodeStakeTooLow\(.*stake at least 1 ETH"):
        a.register_node("m", 0, 10, "h:1", ETH // 2)
    with raises("NodeBadSpan"):
        a.register_node("m", 10, 31, "h:1", ETH)
    with raises("NodeBadCaps"):
        a.register_node("m", 0, 10, "h:1", ETH, caps=CAP_EXACT)  # no dtype class
    with raises("NodeUnknown"):
        a.add_stake(ETH)
    rec = a.register_node("m", 0, 10, "10.0.0.1:7000", 2 * ETH, throughput=123, price_per_block=45, caps=1 | CAP_EXACT)
    assert (rec.start, rec.end, rec.stake, rec.reputation, rec.status) == (0, 10, 2 * ETH, 1.0, "active")
    assert (rec.endpoint, rec.throughput, rec.price, rec.payout, rec.caps) == \
        ("10.0.0.1:7000", 123, 45, a.address, 1 | CAP_EXACT)
    with raises("NodeAlreadyRegistered"):
        a.register_node("m", 0, 10, "h:1", ETH)
    b.register_node("m", 0, 30, "h:2", ETH)
    assert [n.address for n in deployed.list_nodes("m")] == [a.address, b.address]
    assert deployed.full_nodes("m") == [b.address]  # the verifier pool
    a.add_stake(ETH)
    assert a.get_node().stake == 3 * ETH
    with raises("NodeNothingToWithdraw"):
        a.withdraw_earnings()
    with raises("NodeOnlyJobMarket"):
        a._send(a.nodes.functions.settle([], []))
    with raises("NodeBadSetup"):
        deployed._send(deployed.nodes.functions.setJobMarket(a.address))


def test_unbonding_timing(deployed):
    deployed.register_model("m", 30, 4096, b"\1" * 32)
    (a,) = clients(deployed, 1)
    a.register_node("m", 0, 30, "h:1", ETH)
    with raises("NodeNotUnbonding"):
        a.withdraw_stake()
    now = deployed.w3.eth.get_block("latest")["timestamp"]
    unlock = a.request_unbond()
    assert now < unlock <= now + 3600 + 5
    assert a.get_node().status == "unbonding"
    assert deployed.list_nodes("m")[0].active is False  # out of the active set at once
    with raises("NodeIsUnbonding"):
        a.add_stake(ETH)
    with raises("NodeIsUnbonding"):
        a.request_unbond()
    advance_time(deployed.w3, 3600 - 30)
    with raises("NodeStillBonded"):
        a.withdraw_stake()
    advance_time(deployed.w3, 60)
    before = a.balance()
    receipt_cost = a.sender.estimate(a.nodes.functions.withdrawStake(a.address))
    a.withdraw_stake()
    assert a.balance() > before + ETH - receipt_cost * 10**11  # stake back, minus gas
    assert a.get_node().status == "exited" and deployed.list_nodes("m") == []
    a.register_node("m", 0, 30, "h:1", ETH)  # may come back later, keeping its reputation
    assert a.get_node().status == "active"


def _deploy_reentrant(chain):
    art = load_artifact("ReentrantPayout")  # test/ReentrantPayout.sol, built with the contracts
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]["object"])
    addr = chain.sender.send(factory.constructor())["contractAddress"]
    return chain.w3.eth.contract(address=addr, abi=art["abi"])


def test_reentrant_payout_is_paid_exactly_once(deployed):
    nodes, plan = setup_3x3(deployed)
    evil = _deploy_reentrant(deployed)
    # node 10 joins with a contract payout that re-enters withdrawEarnings and withdrawStake
    (n,) = clients(deployed, 1, first=10)
    n.register_node("m", 0, 30, "h:9", ETH, payout=evil.address)
    deployed.sender.send(evil.functions.arm(deployed.nodes.address,
                                             deployed.nodes.functions.withdrawEarnings(n.address)._encode_transaction_data()))
    from proto.types import Hop, Plan, Replica

    p = Plan("m", 30, (Replica((Hop(n.address, 0, 30),)),))
    job = deployed.submit_job(p, b"x", max_tokens=1, fee_wei=ETH, commit_window_s=50, reveal_window_s=50)
    out = encode_output([5])
    n.commit(job, 0, out, SALT)
    n.reveal(job, 0, out, SALT)
    earned = deployed.finalize(job).payouts[n.address]  # the node pool: the fee less the 10% reserve
    assert earned == ETH - ETH // 10
    reg_before = deployed.w3.eth.get_balance(deployed.nodes.address)
    n.withdraw_earnings()
    assert evil.functions.received().call() == earned
    assert deployed.w3.eth.get_balance(deployed.nodes.address) == reg_before - earned
    with raises("NodeNothingToWithdraw"):
        n.withdraw_earnings()
    # stake: re-entering withdrawStake while being paid
    deployed.sender.send(evil.functions.arm(deployed.nodes.address,
                                             deployed.nodes.functions.withdrawStake(n.address)._encode_transaction_data()))
    n.request_unbond()
    advance_time(deployed.w3, 3601)
    n.withdraw_stake()
    assert evil.functions.received().call() == earned + ETH
    assert deployed.w3.eth.get_balance(deployed.nodes.address) == reg_before - earned - ETH
    # a payout address that refuses ETH gets a clear error; the node points it elsewhere and withdraws
    deployed.sender.send(evil.functions.setReject(True))
    n.register_node("m", 0, 30, "h:9", ETH, payout=evil.address)
    n.request_unbond()
    advance_time(deployed.w3, 3601)
    with pytest.raises(ContractError, match=r"^NodeTransferFailed\(.*tessera operator set-payout"):
        n.withdraw_stake()
    n.set_payout(deployed.address)
    before = deployed.balance()
    n.withdraw_stake()
    assert deployed.balance() == before + ETH


def test_reentrant_requester_is_refunded_once(deployed, nodes_3x3):
    nodes, plan = nodes_3x3
    evil = _deploy_reentrant(deployed)
    market = deployed.market
    deployed.sender.send(evil.functions.arm(market.address, market.functions.withdraw()._encode_transaction_data()))
    from proto.types import pack_plan

    submit = market.functions.submitJob(deployed.model_id("m"), pack_plan(plan), (b"x", b"\0" * 32, "", 1, 0, 0, 3, 10, 10, 0))
    deployed.sender.send(evil.functions.forward(market.address, submit._encode_transaction_data()), value=ETH)
    advance_time(deployed.w3, 30)
    deployed.finalize(1)
    assert market.functions.creditsOf(evil.address).call() == ETH
    bal = deployed.w3.eth.get_balance(market.address)
    deployed.sender.send(evil.functions.forward(market.address, market.functions.withdraw()._encode_transaction_data()))
    assert evil.functions.received().call() == ETH
    assert deployed.w3.eth.get_balance(market.address) == bal - ETH
    deployed.sender.send(evil.functions.setReject(True))
    # refunds to a contract that rejects ETH fail loudly and stay credited
    submit2 = market.functions.submitJob(deployed.model_id("m"), pack_plan(plan), (b"x", b"\0" * 32, "", 1, 0, 0, 3, 10, 10, 0))
    deployed.sender.send(evil.functions.forward(market.address, submit2._encode_transaction_data()), value=ETH)
    advance_time(deployed.w3, 30)
    deployed.finalize(2)
    with raises("JobTransferFailed"):
        deployed.sender.send(evil.functions.forward(market.address, market.functions.withdraw()._encode_transaction_data()))
    assert market.functions.creditsOf(evil.address).call() == ETH
