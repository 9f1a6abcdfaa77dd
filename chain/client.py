"""Typed client over the three contracts: one method per contract function.

    chain = TesseraChain.connect("http://127.0.0.1:8545", load_deployment(), account)
    job = chain.submit_job(plan, b"hello", max_tokens=32, fee_wei=10**16)

Reverts raise :class:`proto.errors.ContractError` decoded from the ABI.
"""

from __future__ import annotations

import logging
import os

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from web3 import Web3
from web3.logs import DISCARD

from chain.abi import abi_of
from chain.deploy import Deployment
from chain.events import EventFollower
from chain.records import JOB_STATUS, JobRecord, JobRequest, JobSettlement, ModelRecord, NodeRecord, Reveal
from chain.tx import Sender, call_or_raise
from proto.errors import ChainError, ConfigError
from proto.types import Codec, JobId, ModelId, Plan, model_id, pack_plan

logger = logging.getLogger(__name__)


def _mid(model: "str | bytes") -> ModelId:
    """A model name or a 32-byte id (bytes or 0x hex) -> the id."""
    if isinstance(model, bytes) and len(model) == 32:
        return ModelId(model)
    if isinstance(model, str) and model.startswith("0x") and len(model) == 66:
        return ModelId(bytes.fromhex(model[2:]))
    return model_id(model)


def commitment(job_id: int, replica: int, out_hash: bytes, salt: bytes, tail: str) -> bytes:
    """keccak256(abi.encode(jobId, replica, outputHash, salt, tail)) as in proto/types.py."""
    return keccak(abi_encode(["uint256", "uint256", "bytes32", "bytes32", "address"],
                             [job_id, replica, out_hash, salt, tail]))


def web3_for(url: str) -> Web3:
    """A Web3 over HTTP(S) JSON-RPC. WebSocket URLs are for event followers (``ws_url``)."""
    if url.startswith(("ws://", "wss://")):
        raise ConfigError(f"{url} is a WebSocket URL; pass the node's http(s) URL as --rpc-url "
                          "(WebSockets are used only to follow events)")
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))


class TesseraChain:
    """One account's view of a Tessera deployment."""

    def __init__(self, w3: "Web3 | str", deployment: Deployment, account: "LocalAccount | str | None" = None):
        if isinstance(w3, str):
            w3 = web3_for(w3)
        if isinstance(account, str):
            account = Account.from_key(account)
        if w3.eth.chain_id != deployment.chain_id:
            raise ChainError(f"connected to chain {w3.eth.chain_id} but the deployment is for chain "
                             f"{deployment.chain_id}; pass the right --rpc-url or redeploy")
        self.w3 = w3
        self.deployment = deployment
        self.account = account
        self.sender = Sender(w3, account) if account else None
        self.models = w3.eth.contract(address=deployment.model_registry, abi=abi_of("ModelRegistry"))
        self.nodes = w3.eth.contract(address=deployment.node_registry, abi=abi_of("NodeRegistry"))
        self.market = w3.eth.contract(address=deployment.job_market, abi=abi_of("JobMarket"))
        self._requests: dict[int, JobRequest] = {}

    @classmethod
    def connect(cls, rpc: "str | Web3", deployment: Deployment, account: "LocalAccount | str | None" = None):
        """From an http(s) RPC URL or a Web3, and an account or a 0x private key (same as the constructor)."""
        return cls(rpc, deployment, account)

    @property
    def address(self) -> str:
        if not self.account:
            raise ChainError("this command needs an account; pass --key, --account N or set TESSERA_KEY")
        return self.account.address

    def _send(self, fn, value: int = 0):
        if not self.sender:
            raise ChainError("this command needs an account; pass --key, --account N or set TESSERA_KEY")
        return self.sender.send(fn, value)

    # ------------------------------------------------------------------ models
    def register_model(self, name: str, num_blocks: int, weights_root: bytes, tokenizer_hash: bytes = b"\0" * 32,
                       config_hash: bytes = b"\0" * 32) -> ModelId:
        self._send(self.models.functions.registerModel(name, num_blocks, weights_root, tokenizer_hash, config_hash))
        return model_id(name)

    def get_model(self, model: "str | bytes") -> ModelRecord:
        m = call_or_raise(self.models.functions.getModel(_mid(model)))
        publisher, nb, dep, root, tok, cfg, name = m
        return ModelRecord(model_id(name), name, nb, publisher, dep, bytes(root), bytes(tok), bytes(cfg))

    def deprecate(self, model: "str | bytes") -> None:
        self._send(self.models.functions.deprecate(_mid(model)))

    # ------------------------------------------------------------------- nodes
    def register_node(self, model: "str | bytes", start: int, end: int, endpoint: str, stake_wei: int,
                      throughput: int = 0, price_per_block: int = 0, payout: str | None = None) -> NodeRecord:
        payout = to_checksum_address(payout) if payout else "0x" + "00" * 20
        self._send(self.nodes.functions.register(_mid(model), start, end, endpoint, payout, throughput,
                                                 price_per_block), stake_wei)
        return self.get_node()

    def add_stake(self, wei: int) -> None:
        self._send(self.nodes.functions.addStake(), wei)

    def request_unbond(self) -> int:
        """Leave the active set; returns the unix time the stake becomes withdrawable."""
        self._send(self.nodes.functions.requestUnbond())
        return self.get_node().unbond_at

    def withdraw_stake(self, node: str | None = None) -> None:
        self._send(self.nodes.functions.withdrawStake(to_checksum_address(node or self.address)))

    def withdraw_earnings(self, node: str | None = None) -> None:
        self._send(self.nodes.functions.withdrawEarnings(to_checksum_address(node or self.address)))

    def get_node(self, node: str | None = None) -> NodeRecord | None:
        addr = to_checksum_address(node or self.address)
        rec = NodeRecord.from_tuple(addr, self.nodes.functions.getNode(addr).call())
        return None if rec.status == "none" else rec

    def list_nodes(self, model: "str | bytes") -> list[NodeRecord]:
        """Nodes of a model that have not exited (active, unbonding or understaked)."""
        addrs, recs = self.nodes.functions.nodesOf(_mid(model)).call()
        return [NodeRecord.from_tuple(a, r) for a, r in zip(addrs, recs)]

    # -------------------------------------------------------------------- jobs
    def submit_job(self, plan: Plan, input: "bytes | tuple[bytes, str]", max_tokens: int, fee_wei: int,
                   temperature: float = 0.0, seed: int = 0, codec: "int | str | Codec" = Codec.INT8_OUTLIER,
                   commit_window_s: int = 600, reveal_window_s: int = 600) -> JobId:
        """Escrow ``fee_wei`` and open a job. ``input`` is inline bytes or ``(keccak hash, uri)``.

        A plan that ``JobPlan.check`` would refuse raises :class:`PlanError` before anything is sent.
        """
        plan.validate()
        inline, in_hash, uri = (input, b"\0" * 32, "") if isinstance(input, bytes) else (b"", input[0], input[1])
        params = (inline, in_hash, uri, max_tokens, round(temperature * 1000), seed, int(Codec.parse(codec)),
                  commit_window_s, reveal_window_s)
        receipt = self._send(self.market.functions.submitJob(model_id(plan.model), pack_plan(plan), params), fee_wei)
        (log,) = self.market.events.JobSubmitted().process_receipt(receipt, errors=DISCARD)
        req = self._request_from_log(log)
        self._requests[req.job_id] = req
        return req.job_id

    def max_replicas(self) -> int:
        """The most replicas a plan may have (JobMarket.MAX_REPLICAS)."""
        return call_or_raise(self.market.functions.MAX_REPLICAS())

    def max_job_duration(self) -> int:
        """The longest commit + reveal window a job may ask for, in seconds."""
        return call_or_raise(self.market.functions.maxJobDuration())

    def get_job(self, job_id: int) -> JobRecord:
        t = call_or_raise(self.market.functions.getJob(job_id))
        return JobRecord(JobId(job_id), t[0], t[1], t[2], t[3], JOB_STATUS[t[4]], t[5], t[6], bytes(t[7]))

    def get_request(self, job_id: int) -> JobRequest:
        """The submitted request (plan, input, params) of a job, read from its JobSubmitted event."""
        if job_id not in self._requests:
            logs = self.market.events.JobSubmitted().get_logs(
                from_block=self.deployment.block, argument_filters={"jobId": job_id})
            if not logs:
                raise ChainError(f"no JobSubmitted event for job {job_id}; check the id and the deployment")
            self._requests[job_id] = self._request_from_log(logs[0])
        return self._requests[job_id]

    def plan_of(self, job_id: int) -> Plan:
        """The typed plan of a submitted job (model name and size read from the ModelRegistry)."""
        req = self.get_request(job_id)
        m = self.get_model(req.model_id)
        return req.plan(m.name, m.num_blocks)

    @staticmethod
    def _request_from_log(log) -> JobRequest:
        return JobRequest.from_event(log["args"], log["blockNumber"], log["transactionHash"].to_0x_hex())

    def remember_request(self, req: JobRequest) -> None:
        """Cache a request read elsewhere (e.g. by an EventFollower) so commit/finalize need no log scan."""
        self._requests[req.job_id] = req

    def commit(self, job_id: int, replica: int, output: bytes, salt: bytes) -> bytes:
        """As the tail of ``replica``, commit to ``output``; returns the commitment."""
        c = commitment(job_id, replica, Web3.keccak(output), salt, self.address)
        req = self.get_request(job_id)
        self._send(self.market.functions.commit(job_id, replica, c, req.model_id, req.fee, list(req.hops)))
        return c

    def reveal(self, job_id: int, replica: int, output: bytes, salt: bytes) -> None:
        self._send(self.market.functions.reveal(job_id, replica, output, salt))

    def finalize(self, job_id: int) -> JobSettlement:
        """Settle a job (anyone may); returns what JobFinalized reported."""
        req = self.get_request(job_id)
        receipt = self._send(self.market.functions.finalize(job_id, req.model_id, req.fee, list(req.hops)))
        (log,) = self.market.events.JobFinalized().process_receipt(receipt, errors=DISCARD)
        return JobSettlement.from_event(log["args"], log["blockNumber"], log["transactionHash"].to_0x_hex())

    def settlement(self, job_id: int) -> JobSettlement | None:
        """The job's JobFinalized event, decoded; None while it is not finalized."""
        logs = self.market.events.JobFinalized().get_logs(
            from_block=self.get_request(job_id).block, argument_filters={"jobId": job_id})
        if not logs:
            return None
        return JobSettlement.from_event(logs[0]["args"], logs[0]["blockNumber"], logs[0]["transactionHash"].to_0x_hex())

    def reveals(self, job_id: int) -> dict[int, Reveal]:
        """The outputs revealed so far for a job, by replica (from JobRevealed)."""
        logs = self.market.events.JobRevealed().get_logs(
            from_block=self.get_request(job_id).block, argument_filters={"jobId": job_id})
        return {e["args"]["replica"]: Reveal(e["args"]["replica"], bytes(e["args"]["outputHash"]),
                                             bytes(e["args"]["output"])) for e in logs}

    def follower(self, cursor_file, names=None, ws_url: str | None = None, confirmations: int = 0):
        """An EventFollower over all three contracts from the deployment block (see chain.events)."""
        return EventFollower(self.w3, [self.models, self.nodes, self.market], cursor_file, self.deployment.block,
                             names=names, confirmations=confirmations, ws_url=ws_url)

    def withdraw(self) -> int:
        """Withdraw this account's JobMarket credits (refunds); returns the amount."""
        amount = self.credits_of()
        self._send(self.market.functions.withdraw())
        return amount

    def credits_of(self, account: str | None = None) -> int:
        return self.market.functions.creditsOf(to_checksum_address(account or self.address)).call()

    def balance(self, account: str | None = None) -> int:
        return self.w3.eth.get_balance(to_checksum_address(account or self.address))


def account_from_env() -> LocalAccount | None:
    """The account named by TESSERA_KEY (a 0x private key), if set."""
    key = os.environ.get("TESSERA_KEY")
    return Account.from_key(key) if key else None

