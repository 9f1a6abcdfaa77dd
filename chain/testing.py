"""Helpers for tests and demos: fresh deployments, dev-account clients, a 3x3 network, verifiers."""

from __future__ import annotations

from eth_account import Account
from web3 import Web3

from chain import devnet
from chain.client import TesseraChain
from chain.deploy import DeployParams, deploy
from proto.types import Hop, Plan, Replica

# Short windows and unbonding so tests can move the clock past them (unbonding 3600 s > a job's
# lifetime: 1800 + 300 + 3 x 60).
TEST_PARAMS = DeployParams(min_stake_wei=10**18, unbonding_period_s=3600, slash_wei=10**17, max_job_duration_s=1800,
                           min_commit_window_s=10, min_reveal_window_s=10, attest_window_s=300, finalize_grace_s=60)
SPANS = ((0, 10), (10, 20), (20, 30))


def deploy_fresh(w3: Web3, rpc_url: str | None = None, params: DeployParams = TEST_PARAMS) -> TesseraChain:
    """Deploy new contracts from dev account 0; return its client."""
    acct = Account.from_key(devnet.dev_key(0))
    return TesseraChain(w3, deploy(w3, acct, params, rpc_url=rpc_url), acct)


def clients(chain: TesseraChain, n: int, first: int = 1) -> list[TesseraChain]:
    """Clients for dev accounts first..first+n-1 on the same chain and deployment."""
    return [TesseraChain(chain.w3, chain.deployment, Account.from_key(devnet.dev_key(i)))
            for i in range(first, first + n)]


def funded(chain: TesseraChain, index: int, eth: int = 1000) -> TesseraChain:
    """A client for dev key ``index``; keys past the devnet's funded ones get ``eth`` on anvil."""
    acct = Account.from_key(devnet.dev_key(index))
    if index >= devnet.DEV_ACCOUNTS:
        chain.w3.provider.make_request("anvil_setBalance", [acct.address, hex(eth * 10**18)])
    return TesseraChain(chain.w3, chain.deployment, acct)


def verifiers(chain: TesseraChain, model: str = "m", n: int = 3, first: int = 40) -> list[TesseraChain]:
    """``n`` full nodes of ``model`` (dev keys first..first+n-1, funded): the pool disputes draw from."""
    blocks = chain.get_model(model).num_blocks
    out = [funded(chain, first + i) for i in range(n)]
    for i, c in enumerate(out):
        c.register_node(model, 0, blocks, f"127.0.0.1:{6500 + i}", 10**18, throughput=100, price_per_block=1)
    return out


def setup_3x3(chain: TesseraChain, model: str = "m") -> tuple[list[TesseraChain], Plan]:
    """Register a 30-block model and 9 nodes (dev accounts 1..9); replica r = nodes 3r..3r+2."""
    chain.register_model(model, 30, 4096, b"\x01" * 32)
    nodes = clients(chain, 9)
    for i, c in enumerate(nodes):
        c.register_node(model, *SPANS[i % 3], f"127.0.0.1:{6000 + i}", 10**18, throughput=100, price_per_block=1)
    plan = Plan(model, 30, tuple(Replica(tuple(Hop(nodes[3 * r + k].address, *SPANS[k]) for k in range(3)))
                                 for r in range(3)))
    return nodes, plan
