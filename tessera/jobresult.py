"""A job's result as the chain records it (built by :func:`tessera.requester.result`)."""

from __future__ import annotations

from dataclasses import dataclass

from chain.records import Attestation, JobSettlement
from proto.types import JobId, Plan, decode_output


@dataclass(frozen=True)
class ReplicaView:
    """What became of one replica: its reveal and the judgement the settlement implies."""

    replica: int
    output_hash: str  # 0x keccak of its revealed output ("" if it revealed nothing)
    verdict: str  # honest | divergent | faulty | silent | undecided | unverified | pending
    detail: str = ""  # e.g. which hop was found faulty, or that the silent committer was slashed


@dataclass(frozen=True)
class JobResult:
    """The plan, the reveals and, once finalized, the settlement read from ``JobFinalized``."""

    job_id: JobId
    model: str
    plan: Plan
    fee: int  # wei escrowed
    submit_tx: str  # 0x hash of the submitJob transaction
    reveals: dict[int, str]  # replica -> 0x keccak of the output it revealed
    settlement: JobSettlement | None  # None while the job is open or disputed
    output: bytes = b""  # the answer's output bytes (empty without one)
    text: str | None = None  # the output decoded (text or class ids) where the model is installed
    attestations: tuple[Attestation, ...] = ()  # after a dispute: what each drawn verifier said
    status: str = ""  # the job's status on chain (open | disputed | attesting | finalized)

    @property
    def readable(self) -> str:
        """The decoded output where the model is installed here, else its ids."""
        return self.text if self.text is not None else " ".join(map(str, decode_output(self.output)))

    @property
    def outcome(self) -> str:
        """pending, agreed (replicas agreed), verified (verifiers found an honest replica), unverified
        (they disagreed and no verifier could be drawn: every revealed replica was paid), or refunded."""
        return self.settlement.outcome if self.settlement else "pending"

    @property
    def winners(self) -> tuple[int, ...]:
        """Replicas whose output was accepted and whose served hops were paid."""
        return self.settlement.paid_replicas if self.settlement else ()

    @property
    def output_hash(self) -> str:
        """0x keccak of the answer (the lowest paid replica's output); empty without one."""
        answer = self.settlement.answer if self.settlement else None
        return self.reveals.get(answer, "") if answer is not None else ""

    @property
    def payouts(self) -> dict[str, int]:
        """Node -> wei credited to its earnings, as JobFinalized reported."""
        return dict(self.settlement.payouts) if self.settlement else {}

    @property
    def slashes(self) -> dict[str, int]:
        """Node -> wei of stake slashed (a silent committer, or a hop verifiers found faulty)."""
        return dict(self.settlement.slashes) if self.settlement else {}

    @property
    def refund(self) -> int:
        """Wei credited back to the requester (unused node pay, the verification reserve left, dust)."""
        return self.settlement.refund if self.settlement else 0

    @property
    def finalize_tx(self) -> str:
        return self.settlement.tx_hash if self.settlement else ""

    def replicas(self) -> tuple[ReplicaView, ...]:
        """Per replica: honest (gave the answer), divergent (judged honest, another output), faulty,
        silent (no reveal), undecided (revealed, no verdict), unverified (paid, nobody could judge), or
        pending."""
        return tuple(self._replica(r) for r in range(len(self.plan.replicas)))

    def _replica(self, r: int) -> ReplicaView:
        h = self.reveals.get(r, "")
        s = self.settlement
        words = self.plan.replicas[r].words()
        first = sum(len(rep.words()) for rep in self.plan.replicas[:r])
        slashed = [i for i in range(len(words)) if s and s.hops[first + i].outcome == "slashed"]
        if s is None:
            return ReplicaView(r, h, "pending")
        if not h:
            note = f"its committer {s.hops[first + slashed[0]].node} was slashed" if slashed else ""
            return ReplicaView(r, h, "silent", note)
        if r in s.paid_replicas:
            if s.outcome == "unverified":
                return ReplicaView(r, h, "unverified", "paid without a verdict: no verifier could be drawn")
            return ReplicaView(r, h, "honest" if h == self.output_hash else "divergent")
        verdict = s.verdicts[r] if r < len(s.verdicts) else 0
        if verdict >= 2 or slashed:
            node = s.hops[first + slashed[0]].node if slashed else "?"
            why = f"served hop {verdict - 2} ({node}) named faulty by the verifiers" if verdict >= 2 else \
                f"{node} revealed a route that is not the plan's"
            return ReplicaView(r, h, "faulty", why)
        return ReplicaView(r, h, "undecided")

    @property
    def reason(self) -> str:
        """Why nobody was paid (empty unless the outcome is a refund)."""
        if self.outcome != "refunded":
            return ""
        n = len(self.plan.replicas)
        if not self.reveals:
            return f"none of the {n} replicas revealed an output before the reveal deadline"
        if self.settlement and not self.settlement.verifiers:
            return f"none of the {len(self.reveals)} outputs revealed by the {n} replicas came with a valid route"
        return "the verifiers found no honest replica (or did not attest)"

    def to_json(self) -> dict:
        s = self.settlement
        return {"job_id": self.job_id, "model": self.model, "status": self.status or ("finalized" if s else "open"),
                "outcome": self.outcome, "reason": self.reason, "output_hex": self.output.hex(),
                "output_hash": self.output_hash, "text": self.text, "winners": list(self.winners),
                "replicas": [v.__dict__ for v in self.replicas()],
                "reveals": {str(k): v for k, v in self.reveals.items()},
                "payouts": {k: str(v) for k, v in self.payouts.items()},
                "slashed": {k: str(v) for k, v in self.slashes.items()},
                "refund": str(self.refund), "burned": str(s.burned if s else 0), "fee": str(self.fee),
                "hops": [{"node": h.node, "outcome": h.outcome, "paid": str(h.paid), "slashed": str(h.slashed)}
                         for h in (s.hops if s else ())],
                "verifiers": [{"node": v.node, "outcome": v.outcome, "paid": str(v.paid),
                               "verdicts": next((list(a.verdicts) for a in self.attestations
                                                 if a.verifier == v.node and a.attested), None)}
                              for v in (s.verifiers if s else ())],
                "tx": {"submit": self.submit_tx, "finalize": self.finalize_tx}}
