"""Gas of each JobMarket call for one job with 3 replicas x 3 hops and 32 output tokens.

``tessera bench gas [--json] [--chain embedded]`` deploys fresh contracts on a
throw-away anvil (or the in-process chain), registers 9 nodes and 3 full nodes
(the verifier pool), runs one warm-up job and then measures a second,
steady-state job on the fast path: submitJob, 3 commits, 3 reveals, finalize.
``total`` counts exactly those 8 transactions (what every agreeing job needs).
``dispute`` measures a third job whose replica 1 diverges: the same 8
transactions (finalize opens the dispute), then drawVerifiers, 3 attests and the
finalize that settles it. Earnings and credits are pull payments that accumulate
across jobs, so ``withdrawEarnings`` (a node) and ``withdraw`` (the requester's
refunds) are reported separately, with ``total_if_every_node_withdraws_every_job``
as an upper bound. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import sys

from eth_account import Account
from web3 import Web3

from bench._out import emit
from chain import devnet
from chain.client import TesseraChain
from chain.deploy import DeployParams, deploy
from chain.devnet import dev_key
from chain.testing import verifiers
from proto.types import VERDICT_HONEST, Hop, Plan, Replica, encode_output, verdict_faulty

TARGET_GAS = 600_000
SPANS = ((0, 10), (10, 20), (20, 30))  # a 30-block model cut into 3 hops


def _run_job(req, nodes, plan, outs: list[bytes]) -> tuple[int, dict[str, int]]:
    """The job id and the gas of each transaction: submit, 3 commits, 3 reveals, finalize."""
    gas: dict[str, int] = {}
    job_box: list[int] = []
    gas["submitJob"] = _gas(req, lambda: job_box.append(
        req.submit_job(plan, b"The capital of France is", max_tokens=32, fee_wei=10**16)))
    job = job_box[0]
    salt = b"\x07" * 32
    for r in range(3):
        tail = nodes[r * 3 + 2]
        gas[f"commit_{r}"] = _gas(tail, lambda: tail.commit(job, r, outs[r], salt))
    for r in range(3):
        tail = nodes[r * 3 + 2]
        gas[f"reveal_{r}"] = _gas(tail, lambda: tail.reveal(job, r, outs[r], salt))
    gas["finalize"] = _gas(req, lambda: req.finalize(job))
    return job, gas


def _dispute(req, nodes, pool, plan, out: bytes, bad: bytes) -> dict[str, int]:
    """Gas of a job whose replica 1 diverges: its 8 transactions, then the dispute round."""
    job, gas = _run_job(req, nodes, plan, [out, bad, out])
    gas["drawVerifiers"] = _gas(req, lambda: req.draw_verifiers(job))
    by_addr = {v.address: v for v in pool}
    for i, addr in enumerate(req.verifiers_of(job)):
        v = by_addr[addr]
        gas[f"attest_{i}"] = _gas(v, lambda: v.attest(job, [VERDICT_HONEST, verdict_faulty(0), VERDICT_HONEST]))
    gas["finalize_dispute"] = _gas(req, lambda: req.finalize(job))
    return gas


def _gas(client, action) -> int:
    return int(_capture(client, action)["gasUsed"])


def _capture(client, action):
    """Run ``action`` and return the receipt of the last transaction ``client`` sent during it."""
    got = []
    orig = client.sender.send

    def spy(fn, value=0, gas=None):
        r = orig(fn, value, gas)
        got.append(r)
        return r

    client.sender.send = spy
    try:
        action()
    finally:
        client.sender.send = orig
    return got[-1]


def measure(w3: Web3) -> dict:
    dep = deploy(w3, Account.from_key(dev_key(0)), DeployParams())
    req = TesseraChain(w3, dep, Account.from_key(dev_key(0)))
    req.register_model("bench-model", 30, 2048, b"\x01" * 32)
    nodes = []
    for i in range(9):
        c = TesseraChain(w3, dep, Account.from_key(dev_key(i + 1)))
        c.register_node("bench-model", *SPANS[i % 3], f"127.0.0.1:{7000 + i}", 10**18, 1000, 10**9)
        nodes.append(c)
    pool = verifiers(req, "bench-model")
    plan = Plan("bench-model", 30, tuple(
        Replica(tuple(Hop(nodes[r * 3 + k].address, *SPANS[k]) for k in range(3))) for r in range(3)))
    out = encode_output(range(1000, 1032))  # 32 output tokens
    bad = encode_output(range(2000, 2032))
    _, first = _run_job(req, nodes, plan, [out] * 3)
    _, steady = _run_job(req, nodes, plan, [out] * 3)
    total = sum(steady.values())
    dispute = _dispute(req, nodes, pool, plan, out, bad)
    withdraw = _gas(nodes[0], lambda: nodes[0].withdraw_earnings())
    withdraw_credits = _gas(req, lambda: req.withdraw())
    return {
        "bench": "gas",
        "replicas": 3,
        "hops_per_replica": 3,
        "output_tokens": 32,
        "calls": steady,
        "total": total,
        "target": TARGET_GAS,
        "meets_target": total <= TARGET_GAS,
        "total_first_job": sum(first.values()),
        "withdraw_earnings_per_node": withdraw,
        "withdraw_credits_requester": withdraw_credits,
        "total_if_every_node_withdraws_every_job": total + 9 * withdraw,
        "dispute": dispute,
        "dispute_round": sum(v for k, v in dispute.items() if k.startswith(("drawVerifiers", "attest", "finalize_"))),
        "dispute_total": sum(dispute.values()),
        "counted": "submitJob + 3 commit + 3 reveal + finalize (steady state, second job on the same nodes); "
                   "dispute_round: drawVerifiers + 3 attest + finalize after the 8 transactions of a divergent job",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench gas", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON result line")
    ap.add_argument("--chain", choices=["anvil", "embedded"], default="anvil")
    ap.add_argument("--save", help="also write the JSON result to this file")
    args = ap.parse_args(argv)

    net = None
    if args.chain == "embedded":
        w3 = devnet.embedded_web3()
    else:
        net = devnet.start_anvil()
        w3 = Web3(Web3.HTTPProvider(net.rpc_url))
    try:
        res = measure(w3)
    finally:
        if net:
            devnet.stop_anvil(net)
    if not args.json:
        for k, v in res["calls"].items():
            print(f"{k:>12}: {v:>8,}")
        print(f"{'total':>12}: {res['total']:>8,} (target {TARGET_GAS:,})")
        for k, v in res["dispute"].items():
            print(f"{'dispute ' + k:>25}: {v:>8,}")
        print(f"{'dispute round':>25}: {res['dispute_round']:>8,} (drawVerifiers + 3 attest + finalize)")
    return emit(res, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
