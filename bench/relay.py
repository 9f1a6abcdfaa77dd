"""A TCP relay that holds every byte for a one-way delay (with jitter) in each direction.

This kernel has no ``netem``, so the WAN benchmark puts one of these between
hosts: a connection to ``listen`` is forwarded to ``target``, and each chunk
read is written out ``delay`` (plus a uniform draw in ``[-jitter, +jitter]``)
after it arrived, never before the chunk ahead of it (TCP keeps order), so
a byte stream sees the delay without its bandwidth being cut. Bandwidth caps
are the kernel's (``tc ... tbf``).

    python -m bench.relay --delay-ms 25 --jitter-ms 2.5 --route 10.1.0.1:9000=10.1.1.2:50051 [--route ...]

prints ``READY`` once every route listens and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import random
import signal
import sys
import time

logger = logging.getLogger(__name__)
CHUNK = 1 << 16  # bytes read at once
MAX_HELD = 64 << 20  # bytes held per direction at most; reading pauses past it


def release(arrival: float, last: float, delay_s: float, jitter_s: float, u: float) -> float:
    """When a chunk that arrived at ``arrival`` leaves: arrival + delay + jitter (``u`` uniform in
    [0, 1)), but not before the chunk ahead of it left at ``last`` (pure)."""
    return max(last, arrival + delay_s + jitter_s * (2 * u - 1))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float, jitter_s: float,
                rng: random.Random) -> None:
    """Copy ``reader`` to ``writer``, each chunk held until its release time."""
    held: collections.deque[tuple[float, bytes]] = collections.deque()
    more = asyncio.Event()
    room = asyncio.Event()
    room.set()
    size = [0]
    last = [0.0]

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                last[0] = due = release(time.monotonic(), last[0], delay_s, jitter_s, rng.random())
                held.append((due, data))
                size[0] += len(data)
                more.set()
                if size[0] > MAX_HELD:
                    room.clear()
                    await room.wait()
        finally:
            held.append((0.0, b""))  # end of stream
            more.set()

    reading = asyncio.create_task(read())
    try:
        while True:
            while not held:
                more.clear()
                await more.wait()
            due, data = held.popleft()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            size[0] -= len(data)
            if size[0] <= MAX_HELD:
                room.set()
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()
        writer.close()


async def serve(routes: list[tuple[str, int, str, int]], delay_s: float, jitter_s: float, seed: int = 0):
    """Start one listener per ``(listen host, port, target host, port)``; returns the servers."""
    rng = random.Random(seed)

    def handler(host: str, port: int):
        async def on_conn(r_in: asyncio.StreamReader, w_in: asyncio.StreamWriter) -> None:
            try:
                r_out, w_out = await asyncio.open_connection(host, port)
            except OSError as exc:
                logger.warning("relay cannot reach %s:%d: %s", host, port, exc)
                w_in.close()
                return
            await asyncio.gather(_pump(r_in, w_out, delay_s, jitter_s, rng), _pump(r_out, w_in, delay_s, jitter_s, rng),
                                 return_exceptions=True)
        return on_conn

    return [await asyncio.start_server(handler(th, tp), lh, lp) for lh, lp, th, tp in routes]


def _parse(route: str) -> tuple[str, int, str, int]:
    listen, _, target = route.partition("=")
    lh, _, lp = listen.rpartition(":")
    th, _, tp = target.rpartition(":")
    return lh, int(lp), th, int(tp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.splitlines()[0])
    ap.add_argument("--route", action="append", required=True, help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, milliseconds")
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="uniform jitter around the delay, milliseconds")
    args = ap.parse_args(argv)

    async def run() -> None:
        servers = await serve([_parse(r) for r in args.route], args.delay_ms / 1e3, args.jitter_ms / 1e3)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("READY", flush=True)
        await stop.wait()
        for s in servers:
            s.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
