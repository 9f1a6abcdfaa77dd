"""Deploy the three contracts and read/write the deployment file.

The deployment file (``proto.paths.deployment_file()``) holds the chain id,
the contract addresses and the block of deployment; every other command reads
it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from chain.abi import abi_of
from chain.build import load_artifact
from chain.tx import Sender
from proto import paths
from proto.errors import ChainError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployParams:
    """Protocol parameters fixed at deployment."""

    min_stake_wei: int = 10**18  # minimum stake to register a node
    unbonding_period_s: int = 7 * 24 * 3600  # stake withdrawable this long after `unbond`
    slash_wei: int = 10**17  # taken from a tail that committed and did not reveal
    max_job_duration_s: int = 24 * 3600  # commit window + reveal window, at most; <= unbonding


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live on one chain."""

    chain_id: int
    model_registry: str
    node_registry: str
    job_market: str
    block: int  # block of deployment; event scans start here
    params: DeployParams = DeployParams()
    rpc_url: str | None = None  # where it was deployed (a hint for other commands)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Deployment":
        d = dict(d)
        d["params"] = DeployParams(**d.get("params", {}))
        return cls(**d)


def _deploy_one(w3: Web3, sender: Sender, name: str, *args) -> str:
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]["object"])
    receipt = sender.send(factory.constructor(*args))
    return receipt["contractAddress"]


def deploy(w3: Web3, deployer: LocalAccount, params: DeployParams = DeployParams(), rpc_url: str | None = None) -> Deployment:
    """Deploy ModelRegistry, NodeRegistry and JobMarket and wire them together."""
    if params.unbonding_period_s < params.max_job_duration_s:
        raise ChainError("the unbonding period must be at least the maximum job duration, or nodes could escape slashing")
    sender = Sender(w3, deployer)
    start_block = w3.eth.block_number
    models = _deploy_one(w3, sender, "ModelRegistry")
    nodes = _deploy_one(w3, sender, "NodeRegistry", models, params.min_stake_wei, params.unbonding_period_s,
                        params.slash_wei)
    market = _deploy_one(w3, sender, "JobMarket", models, nodes, params.max_job_duration_s)
    sender.send(w3.eth.contract(address=nodes, abi=abi_of("NodeRegistry")).functions.setJobMarket(market))
    dep = Deployment(w3.eth.chain_id, models, nodes, market, start_block + 1, params, rpc_url)
    logger.info("deployed on chain %d: models %s nodes %s market %s", dep.chain_id, models, nodes, market)
    return dep


def save_deployment(dep: Deployment, path: str | Path | None = None) -> Path:
    path = Path(path) if path else paths.deployment_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dep.to_json(), indent=1))
    return path


def load_deployment(path: str | Path | None = None) -> Deployment:
    """Read the deployment file; raise ChainError with a fix if it is missing."""
    path = Path(path) if path else paths.deployment_file()
    if not path.exists():
        raise ChainError(f"no deployment at {path}; run `tessera chain up` and `tessera chain deploy` first")
    try:
        return Deployment.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as exc:
        raise ChainError(f"deployment file {path} is malformed ({exc}); redeploy with `tessera chain deploy`") from None
