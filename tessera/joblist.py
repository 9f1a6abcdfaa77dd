"""Recent jobs as the chain recorded them (JobSubmitted + JobFinalized events), for
``tessera job list`` and the explorer."""

from __future__ import annotations

from chain.client import TesseraChain
from chain.records import JOB_OUTCOME

LOG_WINDOW = 50_000  # blocks of events read back, count
_U96 = (1 << 96) - 1  # JobFinalized packs wei paid in the low 96 bits of each hop word


def from_block(client: TesseraChain) -> int:
    return max(client.deployment.block, client.w3.eth.block_number - LOG_WINDOW)


def list_jobs(client: TesseraChain, limit: int = 50, requester: str | None = None) -> list[dict]:
    """The newest ``limit`` jobs (of ``requester`` only, if given), newest first."""
    market, start = client.market, from_block(client)
    filters = {"requester": client.w3.to_checksum_address(requester)} if requester else None
    submitted = market.events.JobSubmitted().get_logs(from_block=start, argument_filters=filters)[-limit:]
    finalized = {e["args"]["jobId"]: e for e in market.events.JobFinalized().get_logs(from_block=start)}
    names: dict[bytes, str] = {}
    out = []
    for e in reversed(submitted):
        a = e["args"]
        mid = bytes(a["modelId"])
        if mid not in names:
            names[mid] = client.get_model(mid).name
        fin = finalized.get(a["jobId"])
        outcome = "pending" if fin is None else JOB_OUTCOME.get(fin["args"]["outcome"], str(fin["args"]["outcome"]))
        out.append({"job_id": a["jobId"], "requester": a["requester"], "model": names[mid], "fee_wei": str(a["fee"]),
                    "hops": len(a["hops"]), "status": "finalized" if fin else "open", "outcome": outcome,
                    "paid_wei": str(sum(int(w) & _U96 for w in fin["args"]["hops"]) if fin else 0),
                    "refund_wei": str(fin["args"]["refund"]) if fin else "0",
                    "reveal_deadline": a["revealDeadline"], "submit_tx": e["transactionHash"].to_0x_hex(),
                    "finalize_tx": fin["transactionHash"].to_0x_hex() if fin else ""})
    return out
