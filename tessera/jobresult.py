"""A job's result as the chain records it (built by :func:`tessera.requester.result`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from chain.records import JobSettlement
from proto.types import JobId, Plan, decode_output


@dataclass(frozen=True)
class JobResult:
    """The plan, the reveals and, once finalized, the settlement read from ``JobFinalized``."""

    job_id: JobId
    model: str
    plan: Plan
    fee: int  # wei escrowed
    submit_tx: str  # 0x hash of the submitJob transaction
    reveals: dict[int, str]  # replica -> 0x keccak of the output it revealed
    settlement: JobSettlement | None  # None while the job is open
    output: bytes = b""  # the majority's output bytes (empty without one)
    text: str | None = None  # the output decoded (text or class ids) where the model is installed

    @property
    def readable(self) -> str:
        """The decoded output where the model is installed here, else its ids."""
        return self.text if self.text is not None else " ".join(map(str, decode_output(self.output)))

    @property
    def status(self) -> str:
        return "finalized" if self.settlement else "open"

    @property
    def outcome(self) -> str:
        """pending, majority, or refund (no strict majority: the fee went back to the requester)."""
        if self.settlement is None:
            return "pending"
        return "majority" if self.settlement.majority else "refund"

    @property
    def winners(self) -> tuple[int, ...]:
        return self.settlement.winners if self.settlement else ()

    @property
    def output_hash(self) -> str:
        return "0x" + self.settlement.output_hash.hex() if self.outcome == "majority" else ""

    @property
    def payouts(self) -> dict[str, int]:
        """Node -> wei credited to its earnings, as JobFinalized reported."""
        return dict(self.settlement.payouts) if self.settlement else {}

    @property
    def slashes(self) -> dict[str, int]:
        """Node -> wei of stake slashed (a tail that committed and did not reveal)."""
        return dict(self.settlement.slashes) if self.settlement else {}

    @property
    def refund(self) -> int:
        """Wei of the fee credited back to the requester."""
        return self.settlement.refund if self.settlement else 0

    @property
    def requester_credit(self) -> int:
        """Wei credited to the requester (refund plus slashed stake); withdraw with JobMarket.withdraw."""
        return self.settlement.requester_credit if self.settlement else 0

    @property
    def finalize_tx(self) -> str:
        return self.settlement.tx_hash if self.settlement else ""

    @property
    def reason(self) -> str:
        """Why the job has no majority (empty unless the outcome is a refund)."""
        if self.outcome != "refund":
            return ""
        n = len(self.plan.replicas)
        if not self.reveals:
            return f"none of the {n} replicas revealed an output before the reveal deadline"
        largest = max(Counter(self.reveals.values()).values())
        return (f"no output was revealed by more than half of the {n} replicas ({len(self.reveals)} revealed; "
                f"the most that agreed on one output: {largest})")

    def to_json(self) -> dict:
        hops = self.settlement.hops if self.settlement else ()
        return {"job_id": self.job_id, "model": self.model, "status": self.status, "outcome": self.outcome,
                "reason": self.reason, "output_hex": self.output.hex(), "output_hash": self.output_hash,
                "text": self.text, "winners": list(self.winners), "replicas": len(self.plan.replicas),
                "reveals": {str(k): v for k, v in self.reveals.items()},
                "payouts": {k: str(v) for k, v in self.payouts.items()},
                "slashed": {k: str(v) for k, v in self.slashes.items()},
                "refund": str(self.refund), "requester_credit": str(self.requester_credit), "fee": str(self.fee),
                "hops": [{"node": h.node, "outcome": h.outcome, "paid": str(h.paid), "slashed": str(h.slashed)}
                         for h in hops],
                "tx": {"submit": self.submit_tx, "finalize": self.finalize_tx}}
