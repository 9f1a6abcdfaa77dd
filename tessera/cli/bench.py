"""``tessera bench``: each benchmark lives in ``bench/<name>.py`` with a ``main(argv)``.

Every benchmark prints one JSON object on its last line (with ``--json``) and
writes nothing else to stdout after it.
"""

from __future__ import annotations

import importlib

import click

BENCHES = {
    "gas": "Gas of each JobMarket call and the total for one job.",
    "pipeline": "Decode tokens/s through 1, 2, 3 stages over loopback gRPC vs monolithic.",
    "codec": "Wire bytes, perplexity and top-1 agreement of each activation codec.",
    "routing": "Planning time and plan quality of the router on simulated networks.",
    "hop": "CPU cost of each piece of a hop's own work per token, warm and right after compute.",
    "verify": "Verification by re-execution: false penalties, tampering caught per hop, cost vs generation.",
    "flood": "An honest job's time with its tail flooded by idle streams and replayed OPENs, vs quiet.",
    "gateway": "Time to first token through tessera gateway (openai client) vs tessera job submit --wait.",
    "models-matrix": "Which architectures shard exactly (decoders, encoders, user models) and which are refused.",
    "concurrency": "Aggregate tokens/s of a 3-stage ring at 1-64 concurrent sessions vs monolithic batched generate.",
    "hopprofile": "Where each millisecond of a decode step goes at each stage of the ring, at 1 and 16 sessions.",
    "load": "Jobs per minute, latencies, node CPU and gas with requesters submitting 100 jobs to a devnet.",
    "wan": "A ring across network namespaces at 10-100 ms RTT and 100 Mbit/s: tokens/s vs the physical limit.",
    "all": "Run every benchmark; write bench/results/*.json and bench/REPORT.md (make bench).",
}


def _make(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.pass_context
    def cmd(ctx):
        mod = importlib.import_module(f"bench.{name.replace('-', '_')}")
        rc = mod.main(list(ctx.args))
        if rc:
            ctx.exit(rc)

    return cmd


@click.group()
def bench() -> None:
    """Benchmarks; each prints one JSON object on its last line with --json."""


for _name, _help in BENCHES.items():
    bench.add_command(_make(_name, _help))
