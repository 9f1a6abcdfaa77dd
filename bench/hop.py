"""What one hop's own work costs per token, warm and right after a stage's compute.

A pipeline hop does a little CPU work per token besides the stage itself:
encode the activations, sign the message, check the predecessor's signature
and decode its payload. Run in a loop these take tens of microseconds; in a
real ring they run just after the stage has streamed its weights through the
CPU caches, and cost several times more. This benchmark times each piece both
ways: ``warm`` (back to back) and ``cold`` (after sweeping ``--sweep-mb`` of
memory, about one stage's weights), the median of ``--repeats`` runs (every run
kept under ``runs``), on one
token's activations of SmolLM2 (576 floats) with the job's codec.

    python -m bench.hop --json [--sweep-mb 150] [--codec int8-outlier]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import torch

from bench._out import HEADLINE, emit, summarize
from bench._procs import bench_key
from proto.tessera.v1 import worker_pb2 as pb
from worker import codec
from worker.ring.link import message, payload_of
from worker.signing import Signer, verify
from worker.wire import domain_separator


def _runs_us(fn: Callable[[], object], repeats: int, sweep: torch.Tensor | None) -> list[float]:
    """Microseconds of each of ``repeats`` calls of ``fn``, each after sweeping ``sweep`` if given."""
    times = []
    for _ in range(repeats):
        if sweep is not None:
            sweep.sum()  # evict, as a stage's compute does
        t0 = time.perf_counter()
        fn()
        times.append(round(1e6 * (time.perf_counter() - t0), 1))
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench hop", description=__doc__.splitlines()[0])
    ap.add_argument("--codec", default="int8-outlier", help="activation codec name or id")
    ap.add_argument("--hidden", type=int, default=576, help="hidden size (SmolLM2-135M: 576)")
    ap.add_argument("--sweep-mb", type=int, default=150, help="memory swept before each cold run (one stage's weights)")
    ap.add_argument("--repeats", type=int, default=200, help="runs per piece; the median counts")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cid = codec.codec_id(args.codec)
    signer = Signer(bench_key(0))
    dom = domain_separator(31337, "0x" + "11" * 20)  # any deployment: the cost does not depend on it
    y = torch.randn(1, 1, args.hidden, generator=torch.Generator().manual_seed(0))
    msg = signer.sign(message(7, 0, 0, 3, pb.KIND_STEP, payload=codec.encode(y, cid)), dom)
    answer = signer.sign(message(7, 0, 1, 3, pb.KIND_STEP, upstream=True, ids=[42]), dom)
    pieces = {
        "encode": lambda: codec.encode(y, cid),
        "sign step (message + signature)": lambda: signer.sign(message(7, 0, 0, 3, pb.KIND_STEP,
                                                                       payload=codec.encode(y, cid)), dom),
        "verify signature": lambda: verify(msg, signer.address, dom),
        "check payload hash + decode": lambda: payload_of(msg, 64 << 20),
        "sign answer": lambda: signer.sign(message(7, 0, 1, 3, pb.KIND_STEP, upstream=True, ids=[42]), dom),
        "verify answer": lambda: verify(answer, signer.address, dom),
    }
    sweep = torch.ones(args.sweep_mb * (1 << 20) // 4)
    rows = {}
    for name, fn in pieces.items():
        fn()
        rows[name] = summarize({"warm_us": _runs_us(fn, args.repeats, None),
                                "cold_us": _runs_us(fn, max(args.repeats // 4, 5), sweep)})
        print(f"{name:32s} warm {rows[name]['warm_us']:7.1f} us   cold {rows[name]['cold_us']:7.1f} us",
              file=sys.stderr)
    result = {"bench": "hop", "codec": codec.NAMES[cid], "hidden": args.hidden, "sweep_mb": args.sweep_mb,
              "headline": HEADLINE, "wire_bytes": len(msg.SerializeToString()), "pieces": rows,
              "note": "median microseconds per call; cold = right after sweeping sweep_mb of memory"}
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
