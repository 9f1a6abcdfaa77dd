"""ABIs from the build artifacts and decoding of Solidity custom errors.

Selectors are computed from the compiled ABIs (never hand-maintained). Each
error gets a hint that tells the user what to do; errors without a hint still
decode to their name and arguments.
"""

from __future__ import annotations

import functools
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address, to_hex

from chain.build import CONTRACT_NAMES, load_artifact
from proto.errors import PLAN_HINTS, ChainError, ContractError, describe

ETH = 10**18

# name -> hint; formatted with the error's arguments (and `eth` for wei values).
HINTS: dict[str, str] = {
    **PLAN_HINTS,
    "ModelAlreadyRegistered": "you already published a model with this name ({modelId}); pick another name",
    "ModelUnknown": "no model has id {modelId}; register it first with `tessera model register` "
                    "(or name it as 0xPUBLISHER/NAME)",
    "ModelNotPublisher": "only the publisher {publisher} may do this; send from that account",
    "ModelIsDeprecated": "model {modelId} was deprecated by its publisher; use a current model",
    "ModelInvalid": "a model needs a name of 1-64 bytes without '/', at least one block and a context length",
    "NodeStakeTooLow": "stake {stake} wei is below the minimum {minimum} wei; stake at least {minimum_eth} ETH",
    "NodeAlreadyRegistered": "node {node} is already registered; use `operator stake-add` or unbond first",
    "NodeUnknown": "node {node} is not registered; run `tessera operator register` first",
    "NodeBadSpan": "span [{start}, {end}) is invalid; need start < end <= {numBlocks}",
    "NodeBadCaps": "capabilities {caps:#x} need a dtype (fp32/bf16/fp16) and a weights mode (exact/int8)",
    "NodeIsUnbonding": "node {node} is unbonding (withdrawable at {unbondAt}); withdraw, then register again",
    "NodeNotUnbonding": "node {node} is not unbonding; run `tessera operator unbond` first",
    "NodeStillBonded": "stake of {node} unlocks at unix time {unbondAt} (now {nowTs}); try again then",
    "NodeNothingToWithdraw": "node {node} has nothing to withdraw",
    "NodeOnlyJobMarket": "only the JobMarket contract may call this",
    "NodeTransferFailed": "paying {to} failed; point the payout at an address that accepts ETH with "
                          "`tessera operator set-payout ADDRESS` and withdraw again",
    "NodeNotActive": "node {node} is not active (status {status}); pick active nodes (ask the router again)",
    "NodeWrongModel": "node {node} serves another model; re-plan with nodes of this model",
    "NodeSpanNotServed": "node {node} serves [{nodeStart}, {nodeEnd}), not [{start}, {end}); re-plan",
    "NodeSpecNotServed": "node {node} does not run dtype {dtype} with weights mode {weights} (caps {caps:#x}); "
                         "re-plan or relax the execution spec",
    "NodeBadSetup": "deployment wiring error; redeploy with `tessera chain deploy`",
    "JobBadRequest": "invalid job: {reason}",
    "JobBadParam": "{name} = {value} is outside [{min}, {max}]; fix the job's parameters",
    "JobBadWindows": "windows {commitWindow}s + {revealWindow}s: each must reach {minCommit}s / {minReveal}s and "
                     "together at most {maxJobDuration}s",
    "JobFeeTooLow": "fee {fee} wei is below {minFee} wei ({minFee_eth} ETH), what the planned nodes ask plus the "
                    "verification reserve; raise the fee",
    "JobBadConfig": "deployment parameter {what} = {value} is out of bounds ({bound}); fix it and redeploy",
    "JobUnknown": "no job {jobId}; check the id",
    "JobPlanMismatch": "the plan or terms passed for job {jobId} are not the ones submitted; read them from JobSubmitted",
    "JobBadReplica": "replica {replica} does not exist (job {jobId} has {numReplicas})",
    "JobNotTail": "only the tail {tail} of replica {replica} (or its standby, or whoever committed) may do this, "
                  "not {caller}",
    "JobCommitClosed": "commits for job {jobId} closed (deadline {commitDeadline}, now {nowTs})",
    "JobAlreadyCommitted": "replica {replica} of job {jobId} already committed",
    "JobAlreadyRevealed": "replica {replica} of job {jobId} already revealed",
    "JobRevealNotOpen": "reveals open once every replica committed or at {commitDeadline} (now {nowTs}); wait",
    "JobRevealClosed": "reveals of job {jobId} closed (deadline {revealDeadline}, now {nowTs})",
    "JobNotCommitted": "replica {replica} of job {jobId} never committed",
    "JobBadReveal": "output, receipts root, served mask or salt do not open replica {replica}'s commitment; "
                    "reveal exactly what you committed",
    "JobNotFinalizable": "job {jobId} can be finalized once every replica revealed or after {revealDeadline} (now {nowTs})",
    "JobAlreadyFinalized": "job {jobId} is already finalized",
    "JobSeedNotReady": "job {jobId} waits for block {seedBlock} (now {blockNumber}); try again in a block",
    "JobAwaitingVerifiers": "job {jobId} is disputed; draw its verifiers first (drawVerifiers) once block "
                            "{seedBlock} is mined",
    "JobNotDisputed": "job {jobId} is not waiting for verifiers (status {status})",
    "JobNothingToWithdraw": "{account} has no credits to withdraw",
    "JobTransferFailed": "paying {to} failed; the account must accept ETH",
    "JobOnlyNodeRegistry": "only the NodeRegistry may send slashed stake",
    "DisputeNotOpen": "job {jobId} takes no attestations (no dispute, or it was closed)",
    "DisputeNotVerifier": "{caller} was not drawn as a verifier of job {jobId}",
    "DisputeAlreadyAttested": "{verifier} already attested job {jobId}",
    "DisputeAttestClosed": "attestations for job {jobId} closed at {attestDeadline} (now {nowTs})",
    "DisputeBadVerdicts": "give one verdict per replica: {numReplicas}, not {length}",
    "DisputeBadVerdict": "verdict {verdict} for replica {replica} is above {maxVerdict} (0 unknown, 1 honest, "
                         "2+k faulty at the k-th served hop)",
    "DisputeStillOpen": "job {jobId}'s verifiers may attest until {attestDeadline} (now {nowTs}); wait",
    "DisputeOnlyJobMarket": "only the JobMarket contract may call this",
    "DisputeBadSetup": "deployment wiring error; redeploy with `tessera chain deploy`",
}


@functools.lru_cache(maxsize=None)
def abi_of(name: str) -> tuple:
    """The ABI of a compiled contract (tuple of dict entries)."""
    return tuple(load_artifact(name)["abi"])


@functools.lru_cache(maxsize=1)
def error_table() -> dict[bytes, dict]:
    """4-byte selector -> ABI error entry, across all contracts."""
    table: dict[bytes, dict] = {}
    for name in CONTRACT_NAMES:
        for entry in abi_of(name):
            if entry["type"] == "error":
                sig = f"{entry['name']}({','.join(_type_str(i) for i in entry['inputs'])})"
                table[function_signature_to_4byte_selector(sig)] = entry
    return table


def _type_str(inp: dict) -> str:
    if inp["type"].startswith("tuple"):
        return "(" + ",".join(_type_str(c) for c in inp["components"]) + ")" + inp["type"][5:]
    return inp["type"]


def _fmt(v: Any, typ: str) -> Any:
    """bytes as 0x hex, addresses checksummed (as NodeId and PlanError name them)."""
    if typ == "address":
        return to_checksum_address(v)
    return to_hex(v) if isinstance(v, bytes) else v


def decode_revert(data: bytes | str | None) -> ChainError:
    """Turn revert data into a ContractError (custom error) or a ChainError (other reverts)."""
    if isinstance(data, str):
        data = bytes.fromhex(data[2:] if data.startswith("0x") else data)
    if not data or len(data) < 4:
        return ChainError("transaction reverted without a reason; check the arguments and the account's balance")
    entry = error_table().get(data[:4])
    if entry is None:
        if data[:4] == bytes.fromhex("08c379a0"):
            (reason,) = abi_decode(["string"], data[4:])
            return ChainError(f"transaction reverted: {reason}")
        return ChainError(f"transaction reverted with unknown error data {to_hex(data[:36])}")
    values = abi_decode([_type_str(i) for i in entry["inputs"]], data[4:])
    args = {i["name"]: _fmt(v, i["type"]) for i, v in zip(entry["inputs"], values)}
    fmt_args = dict(args)
    for k, v in list(args.items()):
        if isinstance(v, int):
            fmt_args[f"{k}_eth"] = f"{v / ETH:g}"
    hint = HINTS.get(entry["name"], "")
    try:
        hint = hint.format(**fmt_args)
    except (KeyError, IndexError):
        pass
    return ContractError(entry["name"], args, describe(entry["name"], args, hint))
