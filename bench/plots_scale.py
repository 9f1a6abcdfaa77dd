"""Figures of the throughput-and-scale benchmarks: sessions, load, RTT, GPU (see :mod:`bench.plots`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.plots import Figure, _save  # noqa: E402

SECTION = "scale"


def fig_concurrency(res: dict, out: Path) -> Figure | None:
    """Aggregate tokens/s vs concurrent sessions: the ring, monolithic batched generate, the unbatched ring."""
    runs = {k: v for k, v in res.items() if k.startswith("concurrency-") and "-gpu-" not in k}  # GPU: fig_gpu
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (stem, c) in enumerate(sorted(runs.items())):
        levels = sorted(c["sessions"], key=int)
        x = [int(s) for s in levels]
        color = f"C{i}"
        ax.plot(x, [c["sessions"][s]["tokens_per_s"] for s in levels], "-o", color=color,
                label=f"3-stage ring, batched ({stem})")
        ax.plot(x, [c["sessions"][s]["monolithic_tokens_per_s"] for s in levels], "--", color=color,
                label=f"monolithic batched generate ({stem})")
        unb = [(int(s), c["sessions"][s]["unbatched_tokens_per_s"]) for s in levels
               if "unbatched_tokens_per_s" in c["sessions"][s]]
        if unb:
            ax.plot(*zip(*unb), "x", color=color, markersize=9, label=f"ring, unbatched stages ({stem})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({int(s) for c in runs.values() for s in c["sessions"]}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("concurrent sessions")
    ax.set_ylabel("aggregate decode tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Throughput vs concurrent sessions (median of runs)")
    _save(fig, out / "concurrency.png")
    return Figure(out / "concurrency.png", "Aggregate decode throughput vs concurrent sessions, ring vs monolithic "
                  "batched generate", tuple(sorted(runs)), SECTION)


def fig_wan(res: dict, out: Path) -> Figure | None:
    """One session's tokens/s against its physical limit, and 16 sessions' aggregate, vs RTT."""
    w = res.get("wan")
    if not w:
        return None
    keys = sorted(w["rtt_ms"], key=float)
    rtt = [float(k) for k in keys]
    rows = [w["rtt_ms"][k] for k in keys]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(rtt, [r["tokens_per_s"] for r in rows], "-o", label="one session, measured")
    if all("limit_tokens_per_s" in r for r in rows):
        a.plot(rtt, [r["limit_tokens_per_s"] for r in rows], "--", color="gray",
               label="physical limit (compute + delays per token)")
    a.set_xlabel("round-trip time between hosts, ms")
    a.set_ylabel("tokens/s")
    a.set_ylim(bottom=0)
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    a.set_title("One session")
    b.plot(rtt, [r["aggregate_tokens_per_s"] for r in rows], "-o", color="C1",
           label=f"{w['sessions']} sessions, measured")
    ref = next((r["aggregate_tokens_per_s"] for k, r in zip(keys, rows) if float(k) > 0), None)
    if ref is not None:
        b.axhline(ref * (1 - w["petals_loss_at_100ms"]), color="gray", ls=":",
                  label=f"Petals' {100 * w['petals_loss_at_100ms']:.0f}% loss at 100 ms, from the smallest RTT")
    b.set_xlabel("round-trip time between hosts, ms")
    b.set_ylabel("aggregate tokens/s")
    b.set_ylim(bottom=0)
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    b.set_title(f"{w['sessions']} sessions at once")
    fig.suptitle(f"3 hosts in network namespaces, {w['rate_mbit']:g} Mbit/s links, jitter "
                 f"{100 * w['jitter_share']:.0f}% of the one-way delay")
    _save(fig, out / "wan.png")
    return Figure(out / "wan.png", "Tokens/s vs round-trip time between hosts: one session against its physical "
                  "limit, and the aggregate of many", ("wan",), SECTION)


def fig_load(res: dict, out: Path) -> Figure | None:
    """p50 and p95 time to first token and to settlement, per kind of job."""
    ld = res.get("load")
    if not ld:
        return None
    kinds = sorted(ld["by_kind"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    series = [("first_token_s", "p50"), ("first_token_s", "p95"), ("settle_s", "p50"), ("settle_s", "p95")]
    for i, (what, q) in enumerate(series):
        vals = [ld["by_kind"][k][what][q] or 0 for k in kinds]
        ax.bar([j + (i - 1.5) * width for j in range(len(kinds))], vals, width,
               label=f"{'first token' if what == 'first_token_s' else 'settled'} {q}")
    ax.set_xticks(range(len(kinds)))
    ax.set_xticklabels(kinds)
    ax.set_ylabel("seconds from submit")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(f"{ld['jobs']} jobs at {ld['rate_per_s']}/s from {ld['requesters']} requesters: "
                 f"{ld['jobs_per_minute']} jobs/min")
    _save(fig, out / "load.png")
    return Figure(out / "load.png", "Time from submit to first token and to settlement under load, per kind of job",
                  ("load",), SECTION)


def fig_gpu(res: dict, out: Path) -> Figure | None:
    """Bars per GPU result: the ring (3 stage processes) and monolithic, tokens/s."""
    gpu = {k: v for k, v in sorted(res.items()) if "-gpu-" in k and k.split("-")[0] in ("pipeline", "concurrency")}
    if not gpu:
        return None
    labels, ring, mono = [], [], []
    for stem, r in gpu.items():
        if stem.startswith("pipeline-"):
            row = r["stages"].get("3") or r["stages"][max(r["stages"], key=int)]
        else:
            row = r["sessions"][max(r["sessions"], key=int)]
        labels.append(stem.replace("-gpu-", "\n", 1))
        ring.append(row["tokens_per_s"])
        mono.append(row["monolithic_tokens_per_s"])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels)), 4))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], ring, 0.4, label="ring: 3 stage processes on the GPU")
    ax.bar([x + 0.2 for x in xs], mono, 0.4, label="monolithic (batched for concurrency)")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("tokens/s")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title("GPU: pipeline (1 session) and concurrency (most sessions) runs")
    _save(fig, out / "gpu.png")
    return Figure(out / "gpu.png", "GPU runs: ring vs monolithic tokens/s", tuple(gpu), SECTION)


def make_scale(res: dict, out: Path) -> list[Figure]:
    figs = [fig_concurrency(res, out), fig_load(res, out), fig_wan(res, out), fig_gpu(res, out)]
    return [f for f in figs if f is not None]
