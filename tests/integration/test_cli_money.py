"""The requester's and operator's money path through the CLI on a real anvil: a refund comes
back with `job withdraw`, a job past its deadlines is settled with `job finalize`, and input,
fees, endpoints and amounts that could only waste money are refused before a transaction."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from chain import devnet
from chain.deploy import save_deployment
from chain.testing import clients, setup_3x3
from tessera.cli.main import main

pytestmark = pytest.mark.integration

REQUESTER = 10  # accounts 1..9 are the nodes of setup_3x3
FEE = 3 * 10**16


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def net(deployed, anvil, tmp_path, monkeypatch):
    nodes, plan = setup_3x3(deployed)
    for name in ("smollm2-135m", "digits-cnn"):  # names of models installed here, fake commitments
        deployed.register_model(name, 30, 2048, b"\x02" * 32)
    save_deployment(deployed.deployment, tmp_path / "deployment.json")
    monkeypatch.setenv("TESSERA_DEPLOYMENT", str(tmp_path / "deployment.json"))
    monkeypatch.setenv("TESSERA_RPC_URL", anvil)
    (req,) = clients(deployed, 1, first=REQUESTER)
    return deployed, nodes, plan, req


def test_refund_is_finalized_and_withdrawn_with_the_cli(net, capsys):
    chain, _nodes, plan, req = net
    job = req.submit_job(plan, b"hello", 4, FEE, commit_window_s=60, reveal_window_s=60)  # no node runs it
    rc, _, err = run(capsys, "job", "cancel", str(job))
    assert rc == 1 and "no cancel" in err and "job finalize" in err
    rc, _, err = run(capsys, "job", "finalize", str(job), "--account", str(REQUESTER))
    assert rc == 1 and "JobNotFinalizable" in err and "UTC" in err  # deadline shown as a date, not unix time
    rc, out, _ = run(capsys, "chain", "time-travel", "121")
    assert rc == 0 and "UTC ->" in out
    rc, out, _ = run(capsys, "job", "finalize", str(job), "--account", str(REQUESTER))
    assert rc == 4 and "nobody paid" in out and "tessera job withdraw" in out
    rc, out, _ = run(capsys, "job", "list", "--mine", "--account", str(REQUESTER), "--json")
    (row,) = json.loads(out)["jobs"]
    assert (row["job_id"], row["outcome"], row["refund_wei"]) == (job, "refunded", str(FEE))
    rc, out, _ = run(capsys, "job", "balance", "--account", str(REQUESTER), "--json")
    assert json.loads(out)["credit_wei"] == str(FEE)
    wallet = req.balance()
    rc, out, _ = run(capsys, "job", "withdraw", "--account", str(REQUESTER))
    assert rc == 0 and "withdrew 0.03 ETH" in out
    assert req.credits_of() == 0 and wallet < req.balance() <= wallet + FEE  # the refund, less the gas
    assert run(capsys, "job", "withdraw", "--account", str(REQUESTER))[1].endswith("nothing to withdraw\n")


@pytest.mark.parametrize("argv, says", [
    (["--model", "smollm2-135m", "--image-index", "0"], "no printable text"),  # an image to the LLM
    (["--model", "digits-cnn", "--prompt", "What digit is this?"], "multiple of 64"),  # a prompt to the CNN
    (["--model", "m", "--prompt", "hi", "--fee", "0.000000000000000001"], "is below what the cheapest nodes"),  # 1 wei
    (["--model", "nosuch", "--prompt", "hi"], "'nosuch' is not registered"),  # named, not hashed
])
def test_jobs_that_can_only_waste_the_fee_are_refused_before_escrow(net, capsys, argv, says):
    chain, *_rest, req = net
    before = (req.balance(), chain.w3.eth.get_transaction_count(req.address))
    rc, _, err = run(capsys, "job", "submit", *argv, "--replicas", "3", "--account", str(REQUESTER))
    assert rc == 1 and says in err, err
    assert (req.balance(), chain.w3.eth.get_transaction_count(req.address)) == before


def test_operator_mistakes_are_refused_before_any_transaction(net, capsys):
    chain, nodes, *_ = net
    acct = Account.from_key(devnet.dev_key(11)).address
    nonce = chain.w3.eth.get_transaction_count(acct)
    rc, _, err = run(capsys, "operator", "register", "--account", "11", "--model", "m", "--stake", "1",
                     "--endpoint", "notaport", "--blocks", "0:10")
    assert rc == 1 and "is not HOST:PORT" in err
    rc, _, err = run(capsys, "operator", "stake-add", "0", "--account", "1")
    assert rc == 2 and "adds nothing" in err
    assert chain.w3.eth.get_transaction_count(acct) == nonce
    rc, _, err = run(capsys, "operator", "status", "--model", "nosuch")
    assert rc == 1 and "'nosuch' is not registered" in err
    rc, out, _ = run(capsys, "operator", "status", "--model", "m")  # a pipe: no cut at 80 columns
    assert rc == 0 and all(n.address in out for n in nodes)
    rc, _, err = run(capsys, "operator", "register", "--account", "11", "--model", "m", "--stake", "1",
                     "--endpoint", "127.0.0.1:9")
    assert rc == 0 and "taking the router's advice" in err and "nothing answers at 127.0.0.1:9" in err


def test_a_new_key_is_funded_on_the_devnet_and_registers(net, capsys, tmp_path, monkeypatch):
    chain, *_ = net
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.setenv("TESSERA_KEY_PASSWORD", "pw")
    rc, out, _ = run(capsys, "keys", "new", "fresh")
    address = out.split()[1]
    rc, _, err = run(capsys, "operator", "register", "--key", "fresh", "--model", "m", "--stake", "1",
                     "--endpoint", "127.0.0.1:9", "--blocks", "0:10")
    assert rc == 1 and "tessera chain fund" in err  # says how to fund it
    rc, out, _ = run(capsys, "chain", "fund", address, "2")
    assert rc == 0 and chain.balance(address) == 2 * 10**18
    rc, out, _ = run(capsys, "operator", "register", "--key", "fresh", "--model", "m", "--stake", "1",
                     "--endpoint", "127.0.0.1:9", "--blocks", "0:10")
    assert rc == 0, out
    rc, _, err = run(capsys, "operator", "status", "--key", "nosuchkey")
    assert rc == 1 and "no key named 'nosuchkey'" in err  # said before any password prompt


def test_dev_keys_are_shown_with_a_warning(capsys):
    rc, out, err = run(capsys, "keys", "list", "--dev", "2", "--private")
    assert rc == 0 and devnet.dev_key(1).removeprefix("0x") in out and "WARNING" in err


def test_chain_status_without_a_chain_fails(capsys):
    rc, _, err = run(capsys, "chain", "status", "--rpc-url", f"http://127.0.0.1:{devnet.free_port()}")
    assert rc == 1 and "no chain answers" in err
