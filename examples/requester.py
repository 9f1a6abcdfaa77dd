#!/usr/bin/env python3
"""Submit a Tessera job from plain web3: the way a requester's own program does it.

Needs only web3 and eth-account, the compiled ABI (contracts/out/JobMarket.sol/JobMarket.json),
the deployment file and a router (`tessera router serve`) for the plan:

    python examples/requester.py --rpc-url http://127.0.0.1:8545 \
        --deployment ~/.tessera/deployment.json --router http://127.0.0.1:8547 \
        --key 0x... --model smollm2-135m --prompt "The capital of France is" \
        [--tokenizer ~/.tessera/models/smollm2-135m/tokenizer.json]

It asks the router for a plan, escrows the fee (at least what the planned nodes
ask: JobMarket.feeFloor), waits for JobFinalized and prints the accepted output
(decoded with the tokenizer if given, else token ids) and what each node was
paid or slashed, as JobFinalized reports it. A model name is published by the
deployment's publisher (``publisher`` in deployment.json): its id is
keccak256(abi.encode(publisher, name)).
"""

import argparse
import json
import struct
import sys
import time
import urllib.request
from pathlib import Path

from eth_abi import encode as abi_encode
from eth_account import Account
from tokenizers import Tokenizer
from web3 import Web3

ABI = Path(__file__).resolve().parent.parent / "contracts" / "out" / "JobMarket.sol" / "JobMarket.json"
CODECS = {"fp32": 0, "fp16": 1, "bf16": 2, "int8-absmax": 3, "int8-outlier": 4, "int8-dynamic": 5}
HOP_OUTCOMES = {0: "none", 1: "paid", 3: "slashed"}  # JobFinalized per-hop word, bits 192-199


def ask_router(url: str, model: str, replicas: int) -> list[int]:
    """The plan as packed hops: node | start << 160 | end << 176 | replica << 192."""
    body = json.dumps({"model": model, "replicas": replicas, "mode": "latency"}).encode()
    req = urllib.request.Request(f"{url}/plan", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        plan = json.load(resp)["plan"]
    return [int(h["node"], 16) | h["start"] << 160 | h["end"] << 176 | r << 192
            for r, hops in enumerate(plan["replicas"]) for h in hops]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    ap.add_argument("--deployment", required=True, help="deployment.json written by `tessera chain deploy`")
    ap.add_argument("--router", default="http://127.0.0.1:8547", help="URL of `tessera router serve`")
    ap.add_argument("--key", required=True, help="requester's 0x private key")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--fee-eth", default=None, help="fee in ETH (default: the plan's fee floor)")
    ap.add_argument("--codec", default="int8-outlier", choices=sorted(CODECS))
    ap.add_argument("--tokenizer", help="tokenizer.json to decode the output (needs the tokenizers package)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for JobFinalized")
    args = ap.parse_args()

    w3 = Web3(Web3.HTTPProvider(args.rpc_url))
    me = Account.from_key(args.key)
    dep = json.loads(Path(args.deployment).expanduser().read_text())
    market = w3.eth.contract(address=dep["job_market"], abi=json.loads(ABI.read_text())["abi"])

    hops = ask_router(args.router, args.model, args.replicas)
    model_id = Web3.keccak(abi_encode(["address", "string"], [dep["publisher"], args.model]))
    # JobParams: input, inputHash, inputUri, maxTokens, temperatureMilli, seed, codec, commit and reveal
    # windows (s), spec (0: fp32, exact weights, replicated)
    params = (args.prompt.encode(), b"\0" * 32, "", args.max_tokens, 0, 0, CODECS[args.codec], 600, 300, 0)
    fee = market.functions.feeFloor(model_id, hops, args.max_tokens, 0, 0).call()
    if args.fee_eth is not None:
        fee = max(fee, Web3.to_wei(args.fee_eth, "ether"))
    tx = market.functions.submitJob(model_id, hops, params).build_transaction({
        "from": me.address, "value": fee, "nonce": w3.eth.get_transaction_count(me.address)})
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(me.sign_transaction(tx).raw_transaction))
    job_id = market.events.JobSubmitted().process_receipt(receipt)[0]["args"]["jobId"]
    print(f"submitted job {job_id} ({args.replicas} replicas) in block {receipt.blockNumber}")

    flt = {"jobId": job_id}
    t_end = time.monotonic() + args.timeout
    while not (done := market.events.JobFinalized().get_logs(from_block=receipt.blockNumber, argument_filters=flt)):
        if time.monotonic() > t_end:
            sys.exit(f"job {job_id} not finalized after {args.timeout:.0f} s; anyone may call finalize "
                     "once the reveal deadline has passed")
        time.sleep(1)
    fin = done[0]["args"]
    print("settlement (JobFinalized):")
    for hop, word in zip(hops, fin["hops"]):  # per hop word: paid | slashed << 96 | outcome << 192
        node = Web3.to_checksum_address(hop & ((1 << 160) - 1))
        paid, slashed, outcome = word & ((1 << 96) - 1), word >> 96 & ((1 << 96) - 1), word >> 192 & 0xFF
        cut = f", {Web3.from_wei(slashed, 'ether')} ETH of stake slashed" if slashed else ""
        print(f"  {node}  {HOP_OUTCOMES.get(outcome, outcome)}: +{Web3.from_wei(paid, 'ether')} ETH{cut}")
    winners = [r for r in range(args.replicas) if fin["paidMask"] >> r & 1]
    if not winners:
        sys.exit(f"nobody paid: {Web3.from_wei(fin['refund'], 'ether')} ETH refunded")
    reveals = market.events.JobRevealed().get_logs(from_block=receipt.blockNumber, argument_filters=flt)
    output = next(bytes(e["args"]["output"]) for e in reveals if e["args"]["replica"] == winners[0])
    ids = [struct.unpack(">I", output[i:i + 4])[0] for i in range(0, len(output), 4)]
    if args.tokenizer:
        print("output:", repr(Tokenizer.from_file(args.tokenizer).decode(ids)))
    else:
        print("output token ids:", ids)
    how = "agreed by" if fin["outcome"] == 1 else "judged honest by the verifiers:"
    print(f"{how} replicas {winners} of {args.replicas}; {Web3.from_wei(fin['refund'], 'ether')} ETH refunded")


if __name__ == "__main__":
    main()
