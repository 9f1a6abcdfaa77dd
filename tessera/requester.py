"""The requester's side of a job: follow it on chain and read its result.

Used by ``tessera job``, ``tessera demo`` and the end-to-end tests. Everything
here reads the chain only; the output travels in the reveal's calldata and
events, so a requester needs nothing but a chain connection to read it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from chain.client import TesseraChain
from chain.clock import ChainClock
from proto.errors import ContractError, JobError
from proto.types import Plan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    job_id: int
    replicas: int
    committed: int  # replicas whose tail committed
    revealed: int  # replicas whose tail revealed
    status: str  # open | finalized

    def line(self) -> str:
        if self.status == "finalized":
            return "finalized"
        stage = "running" if self.committed == 0 else "settling"
        return f"{stage}: committed {self.committed}/{self.replicas}, revealed {self.revealed}/{self.replicas}"


@dataclass(frozen=True)
class JobResult:
    job_id: int
    status: str  # open | finalized
    outcome: str  # "majority", "refund" or "pending"
    output: bytes  # the agreed output bytes (empty unless outcome == "majority")
    output_hash: str  # 0x hex of keccak(output)
    winners: tuple[int, ...]  # agreeing replicas
    reveals: dict = field(default_factory=dict)  # replica -> 0x output hash it revealed
    payouts: dict = field(default_factory=dict)  # node address -> wei credited by this job
    refund: int = 0  # wei credited back to the requester
    plan: Plan | None = None

    def to_json(self) -> dict:
        return {"job_id": self.job_id, "status": self.status, "outcome": self.outcome,
                "output_hex": self.output.hex(), "output_hash": self.output_hash, "winners": list(self.winners),
                "reveals": {str(k): v for k, v in self.reveals.items()},
                "payouts": {k: str(v) for k, v in self.payouts.items()}, "refund": str(self.refund)}


def _mask(m: int) -> tuple[int, ...]:
    return tuple(i for i in range(8) if m >> i & 1)


def progress(chain: TesseraChain, job_id: int) -> Progress:
    j = chain.get_job(job_id)
    return Progress(job_id, j.num_replicas, len(_mask(j.committed_mask)), len(_mask(j.revealed_mask)), j.status)


def payouts(plan: Plan, fee: int, winners: tuple[int, ...]) -> dict[str, int]:
    """What each node of the agreeing replicas is credited: pro rata by blocks served,
    the integer-division remainder to the first agreeing replica's tail (as JobMarket does)."""
    if not winners:
        return {}
    per_block = fee // (len(winners) * plan.num_blocks)
    paid: dict[str, int] = {}
    for r in winners:
        for hop in plan.replicas[r].hops:
            paid[hop.node] = paid.get(hop.node, 0) + per_block * hop.blocks
    first_tail = plan.replicas[winners[0]].tail.node
    paid[first_tail] += fee - sum(paid.values())
    return paid


def result(chain: TesseraChain, job_id: int, model: str | None = None) -> JobResult:
    """The job's result read from its events (pending until finalized)."""
    req = chain.get_request(job_id)
    job = chain.get_job(job_id)
    m = chain.get_model(req.model_id)
    plan = req.plan(m.name, m.num_blocks)
    flt = {"jobId": job_id}
    reveals = {e["args"]["replica"]: e["args"] for e in
               chain.market.events.JobRevealed().get_logs(from_block=req.block, argument_filters=flt)}
    fin = chain.market.events.JobFinalized().get_logs(from_block=req.block, argument_filters=flt)
    rev_hashes = {r: "0x" + bytes(a["outputHash"]).hex() for r, a in reveals.items()}
    if not fin:
        return JobResult(job_id, job.status, "pending", b"", "", (), rev_hashes, plan=plan)
    a = fin[0]["args"]
    winners = _mask(a["winnersMask"])
    output = bytes(reveals[winners[0]]["output"]) if winners else b""
    return JobResult(job_id, "finalized", "majority" if winners else "refund", output,
                     "0x" + bytes(a["outputHash"]).hex(), winners, rev_hashes,
                     payouts(plan, req.fee, winners), int(a["refund"]), plan)


def wait(chain: TesseraChain, job_id: int, timeout_s: float = 600.0, poll_s: float = 0.5,
         on_progress: Callable[[Progress], None] | None = None, finalize_after_deadline: bool = True) -> JobResult:
    """Block until the job is finalized; past the reveal deadline, finalize it ourselves
    (anyone may), so a job whose tails all vanished still refunds."""
    req = chain.get_request(job_id)
    clock = ChainClock(chain.w3)
    last = None
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        p = progress(chain, job_id)
        if p != last and on_progress:
            on_progress(p)
        last = p
        if p.status == "finalized":
            return result(chain, job_id)
        if finalize_after_deadline and chain.account and clock.now() > req.reveal_deadline:
            try:
                chain.finalize(job_id)
            except ContractError as exc:
                if exc.name not in ("JobAlreadyFinalized", "JobNotFinalizable"):
                    raise
        time.sleep(poll_s)
    raise JobError(f"job {job_id} was not finalized within {timeout_s:.0f} s; check it later with "
                   f"`tessera job status {job_id}`")
