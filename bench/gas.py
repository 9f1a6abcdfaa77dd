"""Gas of each JobMarket call for one job with 3 replicas x 3 hops and 32 output tokens.

``tessera bench gas [--json] [--chain embedded]`` deploys fresh contracts on a
throw-away anvil (or the in-process chain), registers 9 nodes, runs one
warm-up job and then measures a second, steady-state job: submitJob, 3 commits,
3 reveals, finalize. ``total`` counts exactly those 8 transactions (what every
job needs). Earnings are pull payments that accumulate across jobs, so a node's
``withdrawEarnings`` is reported separately (``withdraw_earnings_per_node``)
together with ``total_if_every_node_withdraws_every_job`` as an upper bound.
The last line of stdout is one JSON object; ``--save FILE`` writes it.
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
from proto.types import Hop, Plan, Replica, encode_output

TARGET_GAS = 600_000
SPANS = ((0, 10), (10, 20), (20, 30))  # a 30-block model cut into 3 hops


def _run_job(req, nodes, plan, out: bytes) -> dict[str, int]:
    """Gas of each transaction of one job: submit, 3 commits, 3 reveals, finalize."""
    gas: dict[str, int] = {}
    job_box: list[int] = []
    gas["submitJob"] = _gas(req, lambda: job_box.append(
        req.submit_job(plan, b"The capital of France is", max_tokens=32, fee_wei=10**16)))
    job = job_box[0]
    salt = b"\x07" * 32
    for r in range(3):
        tail = nodes[r * 3 + 2]
        gas[f"commit_{r}"] = _gas(tail, lambda: tail.commit(job, r, out, salt))
    for r in range(3):
        tail = nodes[r * 3 + 2]
        gas[f"reveal_{r}"] = _gas(tail, lambda: tail.reveal(job, r, out, salt))
    gas["finalize"] = _gas(req, lambda: req.finalize(job))
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
    req.register_model("bench-model", 30, b"\x01" * 32)
    nodes = []
    for i in range(9):
        c = TesseraChain(w3, dep, Account.from_key(dev_key(i + 1)))
        c.register_node("bench-model", *SPANS[i % 3], f"127.0.0.1:{7000 + i}", 10**18, 1000, 10**9)
        nodes.append(c)
    plan = Plan("bench-model", 30, tuple(
        Replica(tuple(Hop(nodes[r * 3 + k].address, *SPANS[k]) for k in range(3))) for r in range(3)))
    out = encode_output(range(1000, 1032))  # 32 output tokens
    first = _run_job(req, nodes, plan, out)
    steady = _run_job(req, nodes, plan, out)
    total = sum(steady.values())
    withdraw = _gas(nodes[0], lambda: nodes[0].withdraw_earnings())
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
        "total_if_every_node_withdraws_every_job": total + 9 * withdraw,
        "counted": "submitJob + 3 commit + 3 reveal + finalize (steady state, second job on the same nodes)",
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
    return emit(res, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
