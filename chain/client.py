"""Typed client over the four contracts: one method per contract function.

    chain = TesseraChain.connect("http://127.0.0.1:8545", load_deployment(), account)
    job = chain.submit_job(plan, b"hello", max_tokens=32, fee_wei=chain.fee_floor(plan, 32))

A model is named ``NAME`` (published by the deployment's default publisher) or
``0xPUBLISHER/NAME``. Reverts raise :class:`proto.errors.ContractError` decoded from the ABI.
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
from chain.records import (
    DISPUTE_REASON,
    Attestation,
    DisputeState,
    JobDisputed,
    JobRecord,
    JobRequest,
    JobSettlement,
    ModelRecord,
    NodeRecord,
    Reveal,
)
from chain.tx import Sender, call_or_raise
from proto.errors import ChainError, ConfigError
from proto.types import (
    ALL_CAPS,
    Codec,
    DType,
    ExecSpec,
    JobId,
    ModelId,
    NodeId,
    Plan,
    WeightsMode,
    model_id,
    pack_plan,
    split_model_ref,
    tail_words,
)

logger = logging.getLogger(__name__)

ZERO32 = b"\0" * 32
PAGE = 200  # nodes read per nodesOf call


def commitment(job_id: int, replica: int, out_hash: bytes, receipts_root: bytes, served_mask: int,
               salt: bytes) -> bytes:
    """keccak256(abi.encode(jobId, replica, outputHash, receiptsRoot, servedMask, salt)) (proto/types.py)."""
    return keccak(abi_encode(["uint256", "uint256", "bytes32", "bytes32", "uint64", "bytes32"],
                             [job_id, replica, out_hash, receipts_root, served_mask, salt]))


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
        self.disputes = w3.eth.contract(address=deployment.disputes, abi=abi_of("Disputes"))
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
    def model_id(self, model: "str | bytes") -> ModelId:
        """A model's id from ``NAME`` (the deployment's default publisher), ``0xPUBLISHER/NAME``,
        or the 32-byte id itself (bytes or 0x hex)."""
        if isinstance(model, bytes) and len(model) == 32:
            return ModelId(model)
        if isinstance(model, str) and model.startswith("0x") and len(model) == 66:
            return ModelId(bytes.fromhex(model[2:]))
        try:
            publisher, name = split_model_ref(model)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return model_id(name, publisher or self.deployment.publisher)

    def model_label(self, m: ModelRecord) -> str:
        """How to name a model here: ``NAME`` under the default publisher, else ``0xPUBLISHER/NAME``."""
        return m.name if m.publisher == self.deployment.publisher else m.ref

    def register_model(self, name: str, num_blocks: int, context_length: int, weights_root: bytes,
                       tokenizer_hash: bytes = ZERO32, config_hash: bytes = ZERO32) -> ModelId:
        """Publish ``name`` under this account; returns its id."""
        self._send(self.models.functions.registerModel(name, num_blocks, context_length, weights_root,
                                                       tokenizer_hash, config_hash))
        return model_id(name, self.address)

    def get_model(self, model: "str | bytes") -> ModelRecord:
        publisher, nb, ctx, dep, root, tok, cfg, name = call_or_raise(self.models.functions.getModel(self.model_id(model)))
        return ModelRecord(model_id(name, publisher), name, nb, ctx, publisher, dep, bytes(root), bytes(tok), bytes(cfg))

    def deprecate(self, model: "str | bytes") -> None:
        self._send(self.models.functions.deprecate(self.model_id(model)))

    # ------------------------------------------------------------------- nodes
    def register_node(self, model: "str | bytes", start: int, end: int, endpoint: str, stake_wei: int,
                      throughput: int = 0, price_per_block: int = 0, payout: str | None = None,
                      caps: int = ALL_CAPS) -> NodeRecord:
        """Stake and register this key; ``price_per_block`` is wei per block per output token,
        ``caps`` the execution capabilities (proto.types CAP_*)."""
        payout = to_checksum_address(payout) if payout else "0x" + "00" * 20
        self._send(self.nodes.functions.register(self.model_id(model), start, end, endpoint, payout, throughput,
                                                 price_per_block, caps), stake_wei)
        return self.get_node()

    def set_payout(self, payout: str) -> None:
        """Pay this node's stake and earnings to ``payout`` from now on."""
        self._send(self.nodes.functions.setPayout(to_checksum_address(payout)))

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
        """Nodes of a model that have not exited (active, unbonding or understaked), page by page."""
        mid, out = self.model_id(model), []
        total = self.nodes.functions.nodeCount(mid).call()
        for offset in range(0, total, PAGE):
            addrs, recs = self.nodes.functions.nodesOf(mid, offset, PAGE).call()
            out += [NodeRecord.from_tuple(a, r) for a, r in zip(addrs, recs)]
        return out

    def full_nodes(self, model: "str | bytes") -> list[NodeId]:
        """Nodes serving all of a model: the pool verifiers are drawn from."""
        mid, out = self.model_id(model), []
        total = self.nodes.functions.fullNodeCount(mid).call()
        for offset in range(0, total, PAGE):
            out += [NodeId(to_checksum_address(a)) for a in self.nodes.functions.fullNodesOf(mid, offset, PAGE).call()]
        return out

    # -------------------------------------------------------------------- jobs
    def fee_floor(self, plan: Plan, max_tokens: int, dtype: "int | DType" = DType.FP32,
                  weights: "int | WeightsMode" = WeightsMode.EXACT) -> int:
        """The least fee submitJob accepts for this plan (JobMarket.feeFloor): what the nodes ask for
        ``max_tokens`` plus the verification reserve."""
        return call_or_raise(self.market.functions.feeFloor(self.model_id(plan.model), pack_plan(plan), max_tokens,
                                                            int(dtype), int(weights)))

    def submit_job(self, plan: Plan, input: "bytes | tuple[bytes, str]", max_tokens: int, fee_wei: int,
                   temperature: float = 0.0, seed: int = 0, codec: "int | str | Codec" = Codec.INT8_OUTLIER,
                   commit_window_s: int = 600, reveal_window_s: int = 600, spec: ExecSpec = ExecSpec()) -> JobId:
        """Escrow ``fee_wei`` and open a job. ``input`` is inline bytes or ``(keccak hash, uri)``;
        ``spec`` pins dtype, weights, verification mode and the sampling extras.

        A plan that ``JobPlan.check`` would refuse raises :class:`PlanError` before anything is sent.
        """
        plan.validate()
        inline, in_hash, uri = (input, ZERO32, "") if isinstance(input, bytes) else (b"", input[0], input[1])
        params = (inline, in_hash, uri, max_tokens, round(temperature * 1000), seed, int(Codec.parse(codec)),
                  commit_window_s, reveal_window_s, spec.pack())
        receipt = self._send(self.market.functions.submitJob(self.model_id(plan.model), pack_plan(plan), params),
                             fee_wei)
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
        return JobRecord.from_tuple(job_id, call_or_raise(self.market.functions.getJob(job_id)))

    def get_request(self, job_id: int) -> JobRequest:
        """The submitted request (plan, input, params, prices) of a job, read from its JobSubmitted event."""
        if job_id not in self._requests:
            logs = self.market.events.JobSubmitted().get_logs(
                from_block=self.deployment.block, argument_filters={"jobId": job_id})
            if not logs:
                raise ChainError(f"no JobSubmitted event for job {job_id}; check the id and the deployment")
            self._requests[job_id] = self._request_from_log(logs[0])
        return self._requests[job_id]

    def plan_of(self, job_id: int) -> Plan:
        """The typed plan of a submitted job (model and size read from the ModelRegistry)."""
        req = self.get_request(job_id)
        m = self.get_model(req.model_id)
        return req.plan(self.model_label(m), m.num_blocks)

    @staticmethod
    def _request_from_log(log) -> JobRequest:
        return JobRequest.from_event(log["args"], log["blockNumber"], log["transactionHash"].to_0x_hex())

    def remember_request(self, req: JobRequest) -> None:
        """Cache a request read elsewhere (e.g. by an EventFollower) so commit/finalize need no log scan."""
        self._requests[req.job_id] = req

    def served_default(self, job_id: int, replica: int) -> int:
        """servedMask of ``replica`` when every primary served (no failover)."""
        req = self.get_request(job_id)
        return req.plan("", 0).replicas[replica].primary_mask()

    def commit(self, job_id: int, replica: int, output: bytes, salt: bytes, receipts_root: bytes = ZERO32,
               served_mask: int | None = None) -> bytes:
        """As the tail of ``replica`` (or its standby), commit to ``output``; returns the commitment.
        ``served_mask`` defaults to the replica's primaries."""
        req = self.get_request(job_id)
        mask = self.served_default(job_id, replica) if served_mask is None else served_mask
        c = commitment(job_id, replica, Web3.keccak(output), receipts_root, mask, salt)
        hops_hash = keccak(b"".join(h.to_bytes(32, "big") for h in req.hops))
        self._send(self.market.functions.commit(job_id, replica, c, tail_words(req.hops), hops_hash,
                                                req.terms_digest()))
        return c

    def reveal(self, job_id: int, replica: int, output: bytes, salt: bytes, receipts_root: bytes = ZERO32,
               served_mask: int | None = None) -> None:
        mask = self.served_default(job_id, replica) if served_mask is None else served_mask
        self._send(self.market.functions.reveal(job_id, replica, output, receipts_root, mask, salt))

    def finalize(self, job_id: int) -> "JobSettlement | JobDisputed":
        """Move a job on (anyone may): the settlement it reached, or the dispute it opened."""
        req = self.get_request(job_id)
        receipt = self._send(self.market.functions.finalize(job_id, list(req.hops), req.terms()))
        return self._outcome(receipt)

    def _outcome(self, receipt) -> "JobSettlement | JobDisputed | None":
        """What a finalize or drawVerifiers transaction did: settled, or disputed (None: neither)."""
        tx = receipt["transactionHash"].to_0x_hex()
        fin = self.market.events.JobFinalized().process_receipt(receipt, errors=DISCARD)
        if fin:
            disp = self.market.events.DisputeSettled().process_receipt(receipt, errors=DISCARD)
            hops = self.get_request(fin[0]["args"]["jobId"]).hops
            return JobSettlement.from_events(fin[0]["args"], hops, receipt["blockNumber"], tx,
                                             disp[0]["args"] if disp else None)
        for log in self.market.events.JobDisputed().process_receipt(receipt, errors=DISCARD):
            a = log["args"]
            return JobDisputed(JobId(a["jobId"]), DISPUTE_REASON.get(a["reason"], str(a["reason"])), a["seedBlock"],
                               receipt["blockNumber"])
        return None

    def settlement(self, job_id: int) -> JobSettlement | None:
        """The job's JobFinalized (and DisputeSettled) events, decoded; None while it is not finalized."""
        logs = self.market.events.JobFinalized().get_logs(
            from_block=self.get_request(job_id).block, argument_filters={"jobId": job_id})
        if not logs:
            return None
        out = self._outcome(self.w3.eth.get_transaction_receipt(logs[0]["transactionHash"]))
        return out if isinstance(out, JobSettlement) else None

    def reveals(self, job_id: int) -> dict[int, Reveal]:
        """The outputs revealed so far for a job, by replica (from JobRevealed)."""
        logs = self.market.events.JobRevealed().get_logs(
            from_block=self.get_request(job_id).block, argument_filters={"jobId": job_id})
        return {e["args"]["replica"]: Reveal(e["args"]["replica"], Web3.keccak(e["args"]["output"]),
                                             bytes(e["args"]["output"]), bytes(e["args"]["receiptsRoot"]),
                                             e["args"]["servedMask"]) for e in logs}

    # ---------------------------------------------------------------- disputes
    def draw_verifiers(self, job_id: int) -> "DisputeState | JobSettlement":
        """Draw a disputed job's verifiers (anyone, once its seed block is mined). Returns the dispute's
        state (attesting; or still disputed with a new seed when the old one expired), or the
        settlement when no verifier was eligible."""
        req = self.get_request(job_id)
        receipt = self._send(self.market.functions.drawVerifiers(job_id, list(req.hops), req.terms()))
        out = self._outcome(receipt)
        return out if isinstance(out, JobSettlement) else self.dispute_state(job_id)

    def attest(self, job_id: int, verdicts: "list[int] | tuple[int, ...]") -> None:
        """As a drawn verifier, attest one verdict per replica (proto.types VERDICT_*, verdict_faulty)."""
        self._send(self.disputes.functions.attest(job_id, list(verdicts)))

    def verifiers_of(self, job_id: int) -> tuple[NodeId, ...]:
        return tuple(NodeId(to_checksum_address(a)) for a in self.disputes.functions.verifiersOf(job_id).call())

    def dispute_state(self, job_id: int) -> DisputeState:
        """The job's status, seed block, drawn verifiers and their attestations."""
        job = self.get_job(job_id)
        verifiers, attested, verdicts, deadline, _status = self.disputes.functions.attestations(job_id).call()
        atts = tuple(Attestation(NodeId(to_checksum_address(v)), a, tuple(d))
                     for v, a, d in zip(verifiers, attested, verdicts, strict=True))
        return DisputeState(JobId(job_id), job.status, job.seed_block, deadline, atts)

    def follower(self, cursor_file, names=None, ws_url: str | None = None, confirmations: int = 0):
        """An EventFollower over all four contracts from the deployment block (see chain.events)."""
        return EventFollower(self.w3, [self.models, self.nodes, self.market, self.disputes], cursor_file,
                             self.deployment.block, names=names, confirmations=confirmations, ws_url=ws_url)

    def withdraw(self) -> int:
        """Withdraw this account's JobMarket credits (refunds, keeper rewards); returns the amount."""
        amount = self.credits_of()
        self._send(self.market.functions.withdraw())
        return amount

    def credits_of(self, account: str | None = None) -> int:
        return self.market.functions.creditsOf(to_checksum_address(account or self.address)).call()

    def burned(self) -> int:
        """Wei of slashed stake burned so far."""
        return self.market.functions.burned().call()

    def balance(self, account: str | None = None) -> int:
        return self.w3.eth.get_balance(to_checksum_address(account or self.address))


def account_from_env() -> LocalAccount | None:
    """The account named by TESSERA_KEY (a 0x private key), if set."""
    key = os.environ.get("TESSERA_KEY")
    return Account.from_key(key) if key else None

