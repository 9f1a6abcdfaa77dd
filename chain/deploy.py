"""Deploy the four contracts and read/write the deployment file.

The deployment file (``proto.paths.deployment_file()``) holds the chain id,
the contract addresses, the block of deployment and the default model
publisher (the deployer: a bare model name resolves to it); every other
command reads it.
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
from proto.errors import ChainError, ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployParams:
    """Protocol parameters fixed at deployment."""

    min_stake_wei: int = 10**18  # minimum stake to register a node
    unbonding_period_s: int = 7 * 24 * 3600  # stake withdrawable this long after `unbond`; > a job's lifetime
    slash_wei: int = 10**17  # taken from a node with evidence against it
    max_job_duration_s: int = 24 * 3600  # commit window + reveal window, at most
    min_commit_window_s: int = 30  # shortest commit window a job may ask for
    min_reveal_window_s: int = 60  # shortest reveal window: a committer always has this long to reveal
    attest_window_s: int = 3600  # verifiers' time to attest a dispute
    finalize_grace_s: int = 3600  # after a stage's deadline, before keepers are paid to move it
    verify_bps: int = 1000  # verification reserve, basis points of the fee (10%)
    keeper_bps: int = 100  # keeper reward per stage, basis points of the fee; 3 x keeper <= verify
    verifiers: int = 3  # K verifiers drawn per dispute (1..8)

    @property
    def job_lifetime_s(self) -> int:
        """The longest a job stays unsettled when keepers act within the grace: the job, the
        attestation window and a grace for each of finalize, draw and final finalize."""
        return self.max_job_duration_s + self.attest_window_s + 3 * self.finalize_grace_s

    def validate(self) -> None:
        """Raise ConfigError naming the first parameter the contracts would refuse."""
        checks = (
            (self.min_stake_wei > 0, "min_stake_wei must be > 0"),
            (self.min_commit_window_s >= 1 and self.min_reveal_window_s >= 1, "minimum windows must be >= 1 s"),
            (self.min_commit_window_s + self.min_reveal_window_s <= self.max_job_duration_s,
             f"max_job_duration_s ({self.max_job_duration_s}) must hold the minimum windows "
             f"({self.min_commit_window_s} + {self.min_reveal_window_s})"),
            (self.attest_window_s >= 1, "attest_window_s must be >= 1"),
            (self.unbonding_period_s > self.job_lifetime_s,
             f"unbonding_period_s ({self.unbonding_period_s}) must be longer than a job's lifetime "
             f"({self.job_lifetime_s} = max job {self.max_job_duration_s} + attest {self.attest_window_s} "
             f"+ 3 x grace {self.finalize_grace_s}), or a node could withdraw its stake before its job settles"),
            (0 <= self.verify_bps < 10_000, "verify_bps must be in [0, 9999]"),
            (0 <= 3 * self.keeper_bps <= self.verify_bps, "keeper_bps x 3 must fit in verify_bps (3 keeper stages)"),
            (1 <= self.verifiers <= 8, "verifiers must be 1..8"),
        )
        for ok, why in checks:
            if not ok:
                raise ConfigError(f"deployment parameters: {why}")

    def market_config(self) -> tuple:
        """JobSettle.Config as the constructor takes it."""
        return (self.max_job_duration_s, self.min_commit_window_s, self.min_reveal_window_s, self.attest_window_s,
                self.finalize_grace_s, self.verify_bps, self.keeper_bps)


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live on one chain."""

    chain_id: int
    model_registry: str
    node_registry: str
    job_market: str
    block: int  # block of deployment; event scans start here
    disputes: str = ""  # Disputes contract (verifier draws and attestations)
    publisher: str = ""  # default model publisher: a bare model name means (publisher, name)
    params: DeployParams = DeployParams()
    rpc_url: str | None = None  # where it was deployed (a hint for other commands)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Deployment":
        d = dict(d)
        d["params"] = DeployParams(**d.get("params", {}))
        dep = cls(**d)
        if not dep.disputes or not dep.publisher:
            raise ChainError("the deployment file is from protocol v1 (no Disputes contract or publisher); "
                             "redeploy with `tessera chain deploy`")
        return dep


def _deploy_one(w3: Web3, sender: Sender, name: str, *args) -> str:
    art = load_artifact(name)
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]["object"])
    receipt = sender.send(factory.constructor(*args))
    return receipt["contractAddress"]


def deploy(w3: Web3, deployer: LocalAccount, params: DeployParams = DeployParams(), rpc_url: str | None = None) -> Deployment:
    """Deploy ModelRegistry, NodeRegistry, Disputes and JobMarket and wire them together."""
    params.validate()
    sender = Sender(w3, deployer)
    start_block = w3.eth.block_number
    models = _deploy_one(w3, sender, "ModelRegistry")
    nodes = _deploy_one(w3, sender, "NodeRegistry", models, params.min_stake_wei, params.unbonding_period_s,
                        params.slash_wei)
    disputes = _deploy_one(w3, sender, "Disputes", nodes, params.verifiers)
    market = _deploy_one(w3, sender, "JobMarket", models, nodes, disputes, params.market_config())
    sender.send(w3.eth.contract(address=nodes, abi=abi_of("NodeRegistry")).functions.setJobMarket(market))
    sender.send(w3.eth.contract(address=disputes, abi=abi_of("Disputes")).functions.setJobMarket(market))
    dep = Deployment(w3.eth.chain_id, models, nodes, market, start_block + 1, disputes, deployer.address, params,
                     rpc_url)
    logger.info("deployed on chain %d: models %s nodes %s disputes %s market %s", dep.chain_id, models, nodes,
                disputes, market)
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
