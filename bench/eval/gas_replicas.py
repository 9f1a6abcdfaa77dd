"""Gas per job, by call, for 1, 3 and 5 replicas (3 hops each, 32 output tokens).

Same procedure as ``bench/gas.py`` (whose receipt capture it reuses): fresh
contracts on a throw-away anvil, nodes registered on a 30-block model cut
into 3 hops, a warm-up job and then a measured steady-state job: submitJob,
one commit and one reveal per replica, finalize. Dev accounts beyond anvil's
funded ones get their ETH from account 0. Every replica reveals the same
output, so finalize pays every node (the honest, unanimous case).

    python -m bench.eval.gas_replicas --json [--replicas 1,3,5] [--save FILE]
"""

from __future__ import annotations

import argparse
import sys

from eth_account import Account
from web3 import Web3

from bench._out import emit
from bench.gas import SPANS, _gas
from chain import devnet
from chain.client import TesseraChain
from chain.deploy import DeployParams, deploy
from chain.devnet import dev_key
from proto.types import Hop, Plan, Replica, encode_output


def _fund(w3: Web3, keys: list[str], wei: int) -> None:
    src = Account.from_key(dev_key(0))
    for k in keys:
        addr = Account.from_key(k).address
        if w3.eth.get_balance(addr) < wei:
            h = w3.eth.send_transaction({"from": src.address, "to": addr, "value": wei}) \
                if src.address in w3.eth.accounts else _signed(w3, src, addr, wei)
            w3.eth.wait_for_transaction_receipt(h)


def _signed(w3: Web3, src, to: str, wei: int):
    tx = {"to": to, "value": wei, "gas": 21000, "gasPrice": w3.eth.gas_price, "chainId": w3.eth.chain_id,
          "nonce": w3.eth.get_transaction_count(src.address)}
    return w3.eth.send_raw_transaction(src.sign_transaction(tx).raw_transaction)


def job_gas(req, nodes, plan, replicas: int, out: bytes) -> dict[str, int]:
    """Gas of each transaction of one job with ``replicas`` replicas."""
    box: list[int] = []
    gas = {"submitJob": _gas(req, lambda: box.append(
        req.submit_job(plan, b"The capital of France is", max_tokens=32, fee_wei=10**16)))}
    salt = b"\x07" * 32
    tails = [nodes[r * len(SPANS) + len(SPANS) - 1] for r in range(replicas)]
    gas["commit"] = sum(_gas(t, lambda t=t, r=r: t.commit(box[0], r, out, salt)) for r, t in enumerate(tails))
    gas["reveal"] = sum(_gas(t, lambda t=t, r=r: t.reveal(box[0], r, out, salt)) for r, t in enumerate(tails))
    gas["finalize"] = _gas(req, lambda: req.finalize(box[0]))
    return gas


def measure(w3: Web3, replicas: int) -> dict:
    hops = len(SPANS)
    keys = [dev_key(i + 1) for i in range(replicas * hops)]
    _fund(w3, keys, 10 * 10**18)
    dep = deploy(w3, Account.from_key(dev_key(0)), DeployParams())
    req = TesseraChain(w3, dep, Account.from_key(dev_key(0)))
    req.register_model("bench-model", 30, 2048, b"\x01" * 32)
    nodes = []
    for i, k in enumerate(keys):
        c = TesseraChain(w3, dep, Account.from_key(k))
        c.register_node("bench-model", *SPANS[i % hops], f"127.0.0.1:{7000 + i}", 10**18, 1000, 10**9)
        nodes.append(c)
    plan = Plan("bench-model", 30, tuple(
        Replica(tuple(Hop(nodes[r * hops + k].address, *SPANS[k]) for k in range(hops))) for r in range(replicas)))
    out = encode_output(range(1000, 1032))
    job_gas(req, nodes, plan, replicas, out)  # warm-up: first-touch storage
    calls = job_gas(req, nodes, plan, replicas, out)
    return {"replicas": replicas, "hops_per_replica": hops, "calls": calls, "total": sum(calls.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eval.gas_replicas", description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", default="1,3,5", help="comma-separated replica counts")
    ap.add_argument("--save")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    rows = []
    for r in [int(v) for v in args.replicas.split(",") if v]:
        net = devnet.start_anvil()  # fresh chain per size: no state carried over
        try:
            rows.append(measure(Web3(Web3.HTTPProvider(net.rpc_url)), r))
        finally:
            devnet.stop_anvil(net)
        print(f"R={r}: {rows[-1]['calls']} total {rows[-1]['total']:,}", file=sys.stderr)
    result = {"bench": "gas_replicas", "output_tokens": 32, "rows": rows,
              "counted": "steady-state job: submitJob + R commits + R reveals + finalize (commit/reveal summed over replicas)"}
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
