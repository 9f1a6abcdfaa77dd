"""An honest job's time with one of its nodes under a flood, against the same job in quiet.

The benchmark process is the head of a 2-stage ring over loopback gRPC (the
tail is a ``tessera operator run --plan-file`` process). For a flood run a
separate flooder process (``--flooder``, so its threads take nothing from the
head's interpreter) opens ``--idle-streams`` Forward streams to the tail that
never send anything and holds them; as the job starts it replays a recorded
OPEN of the job ``--replays`` times on new streams, from 4 threads at once. Quiet and flood runs alternate, ``--runs`` of each; the median
of each counts and every run is kept. Ping round trips to the tail are
sampled every 100 ms during flood runs. Goal: flood <= 1.5x quiet.

    python -m bench.flood --json [--runs 5] [--tokens 16] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import torch
from transformers import AutoTokenizer

from bench._out import emit
from bench._procs import REPO, bench_key, even_spans, free_port, ring_route, workers
from bench.pipeline import PROMPT
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from worker import codec
from worker.config import WorkerConfig
from worker.planview import GenParams
from worker.ring import Channels, run_replica
from worker.ring.link import message
from worker.shard import load_stage
from worker.signing import Signer
from worker.store import load_manifest, resolve

GOAL = 1.5  # flood time / quiet time, at most


def flooder(port: int, record: bytes, idle: int, replays: int) -> int:
    """Open ``idle`` silent streams and print FLOODING; on a line of stdin replay ``record`` (a
    serialized OPEN) ``replays`` times; hold the streams until stdin closes; print the replay seconds."""
    chans = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(10)]
    never = threading.Event()

    def silent():
        never.wait()
        yield from ()

    held = [pb_grpc.WorkerServiceStub(chans[i % 10]).Forward(silent()) for i in range(idle)]
    msg = pb.HopMessage.FromString(record)

    def replay(n: int):
        stub = pb_grpc.WorkerServiceStub(chans[0])
        for _ in range(n):
            try:
                list(stub.Forward(iter([msg]), timeout=10))
            except grpc.RpcError:
                pass

    print("FLOODING", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=replay, args=(replays // 4 + (i < replays % 4),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    took = time.perf_counter() - t0
    sys.stdin.read()  # hold the idle streams until the benchmark closes stdin
    print(f"REPLAYED {took:.3f}", flush=True)
    never.set()
    for h in held:
        h.cancel()
    return 0


class Pings:
    def __init__(self, port: int):
        self.stub = pb_grpc.WorkerServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        self.rtts: list[float | None] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            t0 = time.perf_counter()
            try:
                self.stub.Ping(pb.PingRequest(), timeout=2)
                self.rtts.append(time.perf_counter() - t0)
            except grpc.RpcError:
                self.rtts.append(None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tessera bench flood", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored model name or directory")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens of the honest job")
    ap.add_argument("--runs", type=int, default=5, help="runs in quiet and under flood each; the median counts")
    ap.add_argument("--idle-streams", type=int, default=200, help="silent streams the flooder holds open")
    ap.add_argument("--replays", type=int, default=200, help="replayed OPENs per flood run, at least")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--flooder", nargs=2, metavar=("PORT", "RECORD_HEX"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.flooder:
        return flooder(int(args.flooder[0]), bytes.fromhex(args.flooder[1]), args.idle_streams, args.replays)

    torch.set_num_threads(1)
    load0 = os.getloadavg()
    model_dir = resolve(args.model)
    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT)["input_ids"]
    n = load_manifest(model_dir).num_blocks
    spans = even_spans(n, 2)
    stage = load_stage(model_dir, *spans[0])
    ports = [0, free_port()]
    route = ring_route(1, stage.spec.model, n, spans, ports, GenParams(max_tokens=args.tokens, codec=codec.INT8_OUTLIER))
    signer, channels = Signer(bench_key(0)), Channels()
    quiet, flood, replays, pings, flood_pings = [], [], [], Pings(ports[1]), []
    with tempfile.TemporaryDirectory() as tmp, workers(model_dir, spans, ports, [route], Path(tmp)):
        run_replica(stage, route, 0, ids, signer, channels=channels)  # warm-up
        record = signer.sign(message(1, 0, 0, 0, pb.KIND_OPEN, session=os.urandom(32),
                                     sent_unix_ms=time.time_ns() // 10**6), route.domain)
        list(pb_grpc.WorkerServiceStub(grpc.insecure_channel(f"127.0.0.1:{ports[1]}")).Forward(iter([record])))
        pings.thread.start()
        for _ in range(args.runs):
            quiet.append(_timed(stage, route, ids, signer, channels))
            proc = subprocess.Popen([sys.executable, "-m", "bench.flood", "--flooder", str(ports[1]),
                                     record.SerializeToString().hex(), "--idle-streams", str(args.idle_streams),
                                     "--replays", str(args.replays)], cwd=REPO, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout.readline().strip() == "FLOODING", "the flooder did not start"
                mark = len(pings.rtts)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                flood.append(_timed(stage, route, ids, signer, channels))
                flood_pings += pings.rtts[mark:]
                proc.stdin.close()
                replays.append(float(proc.stdout.readline().split()[1]))
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)
        pings.stop.set()
    channels.close()
    answered = sorted(r for r in flood_pings if r is not None)
    mq, mf = statistics.median(quiet), statistics.median(flood)
    result = {"bench": "flood", "model": args.model, "tokens": args.tokens, "runs": args.runs,
              "flood": f"{args.idle_streams} idle streams held + a recorded OPEN replayed {args.replays} times from 4 "
                       "threads as the job starts, against the tail of a 2-stage ring (flooder on this machine)",
              "quiet_s": [round(t, 3) for t in quiet], "flood_s": [round(t, 3) for t in flood],
              "median_quiet_s": round(mq, 3), "median_flood_s": round(mf, 3), "flood_vs_quiet": round(mf / mq, 3),
              "replay_seconds_per_flood_run": replays,
              "ping_ms_during_flood": {"median": round(1e3 * statistics.median(answered), 2) if answered else None,
                                       "max": round(1e3 * answered[-1], 2) if answered else None,
                                       "unanswered": len(flood_pings) - len(answered), "sent": len(flood_pings)},
              "load_average_1m": {"start": round(load0[0], 2), "end": round(os.getloadavg()[0], 2)},
              "cpus": os.cpu_count(), "goal": f"flood <= {GOAL}x quiet", "goal_met": mf / mq <= GOAL}
    print(f"quiet {mq:.2f} s, flood {mf:.2f} s ({mf / mq:.2f}x); ping max "
          f"{result['ping_ms_during_flood']['max']} ms", file=sys.stderr)
    return emit(result, args.save, args.json)


def _timed(stage, route, ids, signer, channels) -> float:
    t0 = time.perf_counter()
    run_replica(stage, route, 0, ids, signer, channels=channels, config=WorkerConfig())
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
