"""PNG figures for bench/REPORT.md from the result files in bench/results/.

Each ``fig_*`` function takes the loaded results (file stem -> JSON object,
see :func:`load_results`) and a figure directory, draws one PNG and returns a
:class:`Figure` naming the result files it used, or None when those results
are missing. ``python -m bench.plots`` redraws every figure from what is on
disk without running any benchmark.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = Path(__file__).resolve().parent / "figures"
CODECS = ("fp16", "bf16", "int8-absmax", "int8-outlier", "int8-dynamic")


@dataclass(frozen=True)
class Figure:
    path: Path  # the PNG
    title: str  # one-line caption
    sources: tuple[str, ...]  # result file stems the figure was drawn from
    section: str = ""  # report section it belongs to ("accuracy", "bytes", ...; "" = by first source)


def load_results(folder: Path = RESULTS) -> dict[str, dict]:
    """Every ``*.json`` in ``folder``, keyed by file stem (``codec-cpu``, ``disagree-gpu-...``)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fig_language(res: dict, out: Path) -> Figure | None:
    """SmolLM2 perplexity change and top-1 agreement vs cut count, per codec and block size."""
    runs = [(k, res[k]["language"]) for k in ("codec-cpu", "codec-block4096-cpu") if res.get(k, {}).get("language")]
    if not runs:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for stem, lang in runs:
        cuts = sorted(lang["cuts"], key=int)
        for c in CODECS:
            if c not in lang["cuts"][cuts[0]]:
                continue
            label = f"{c} (block {lang['block']})"
            style = "-o" if lang["block"] == 64 else "--s"
            a.plot([int(k) for k in cuts], [lang["cuts"][k][c]["perplexity_vs_fp32_pct"] for k in cuts], style, label=label)
            b.plot([int(k) for k in cuts], [100 * lang["cuts"][k][c]["top1_agreement"] for k in cuts], style, label=label)
    q = res.get("quant-cpu", {}).get("models", {}).get("smollm2-135m")
    if q:
        a.axhline(100 * (q["int8_metric"] / q["fp32_metric"] - 1), color="k", ls=":", label="int8-mixed weights")
        b.axhline(100 * q["top1_agreement"], color="k", ls=":", label="int8-mixed weights")
    if q:
        a.legend(handles=a.get_lines()[-1:], fontsize=7)
    a.set_yscale("symlog", linthresh=0.5)  # small changes readable beside block-4096 absmax's collapse
    for ax, yl in ((a, "perplexity vs fp32 (%, symlog)"), (b, "top-1 agreement with fp32 (%)")):
        ax.set_xscale("log")
        ax.set_xticks([int(k) for k in cuts], [str(k) for k in cuts])
        ax.set_xlabel("cuts (activations through the codec)")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    b.legend(fontsize=7)
    fig.suptitle(f"SmolLM2-135M on {runs[0][1]['tokens']} tokens of pydoc_data text")
    _save(fig, out / "language.png")
    return Figure(out / "language.png", "SmolLM2-135M: perplexity and top-1 agreement vs codec and cuts",
                  tuple(k for k, _ in runs) + (("quant-cpu",) if q else ()), "accuracy")


def fig_minilm(res: dict, out: Path) -> Figure | None:
    m = res.get("minilm-cpu")
    if not m:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    series: dict[str, list] = {}
    for r in m["rows"]:
        series.setdefault(f"{r['codec']} (block {r['block']})" if r["codec"].startswith("int8") else r["codec"],
                          []).append((r["cuts"], max(1e-9, 1 - r["cosine_mean"])))
    for label, pts in series.items():
        ax.plot(*zip(*sorted(pts)), "--s" if "4096" in label else "-o", label=label)
    ax.axhline(max(1e-9, 1 - m["int8_mixed_weights"]["cosine_mean"]), color="k", ls=":", label="int8-mixed weights")
    ax.set_yscale("log")
    ax.set_xlabel(f"cuts (of {m['layers'] - 1} possible)")
    ax.set_ylabel("1 - mean cosine to fp32 embedding (floor 1e-9)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"all-MiniLM-L6-v2, {m['sentences']} sentences")
    _save(fig, out / "minilm.png")
    return Figure(out / "minilm.png", "MiniLM sentence embeddings: distance to fp32 vs codec and cuts", ("minilm-cpu",), "accuracy")


def fig_vision(res: dict, out: Path) -> Figure | None:
    c = res.get("codec-cpu", {}).get("vision")
    if not c:
        return None
    q = res.get("quant-cpu", {}).get("models", {})
    fig, ax = plt.subplots(figsize=(8, 3.8))
    models = list(c)
    labels = list(next(iter(c.values()))["accuracy"]) + (["int8-mixed w"] if q else [])
    width = 0.8 / len(models)
    for i, name in enumerate(models):
        acc = dict(c[name]["accuracy"])
        if q and name in q:
            acc["int8-mixed w"] = q[name]["int8_metric"]
        ax.bar([j + i * width for j in range(len(labels))], [100 * acc.get(l, 0) for l in labels], width,
               label=f"{name} ({c[name]['cuts']} cuts)")
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(labels))], labels, rotation=20, fontsize=8)
    lo = min(100 * v for d in c.values() for v in d["accuracy"].values())
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("digits test split, cut after every block")
    _save(fig, out / "vision.png")
    return Figure(out / "vision.png", "Digits CNN and ViT accuracy per activation codec (every-block cuts) and int8-mixed weights",
                  ("codec-cpu",) + (("quant-cpu",) if q else ()), "accuracy")


def fig_wire(res: dict, out: Path) -> Figure | None:
    lang = res.get("codec-cpu", {}).get("language")
    if not lang:
        return None
    k = "3" if "3" in lang["cuts"] else sorted(lang["cuts"], key=int)[0]
    rows = {"fp32": 4 * (lang["cuts"][k]["fp16"]["bytes_per_token_per_hop"] / 2) if "fp16" in lang["cuts"][k] else None}
    rows.update({f"{c} b{lang['block']}": v["bytes_per_token_per_hop"] for c, v in lang["cuts"][k].items()})
    big = res.get("codec-block4096-cpu", {}).get("language")
    if big and k in big["cuts"]:
        rows.update({f"{c} b{big['block']}": v["bytes_per_token_per_hop"] for c, v in big["cuts"][k].items()})
    rows = {a: b for a, b in rows.items() if b is not None}
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(list(rows), list(rows.values()), color="tab:blue")
    for i, v in enumerate(rows.values()):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("bytes per token per hop")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.set_title(f"SmolLM2-135M hidden state (576 values) on the wire, {k} cuts")
    _save(fig, out / "wire_bytes.png")
    return Figure(out / "wire_bytes.png", "Bytes on the wire per token per hop, per codec",
                  ("codec-cpu",) + (("codec-block4096-cpu",) if big else ()), "bytes")


def fig_memory(res: dict, out: Path) -> Figure | None:
    m = res.get("memory")
    if not m:
        return None
    shards = [(f"{s} shard(s): [{r['start']},{r['end']})", r["bytes"]) for s, rs in m["splits"].items() for r in rs]
    schemes = list(shards[0][1])
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(schemes)
    for i, sc in enumerate(schemes):
        ax.bar([j + i * width for j in range(len(shards))], [b[sc] / 2**20 for _, b in shards], width, label=sc)
    ax.set_xticks([j + width * (len(schemes) - 1) / 2 for j in range(len(shards))], [s for s, _ in shards], fontsize=8)
    ax.set_ylabel("resident weights (MiB)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{m['model']}: weight memory per shard per scheme")
    _save(fig, out / "memory.png")
    return Figure(out / "memory.png", "Resident weight memory per shard, per scheme", ("memory",), "bytes")


def fig_pipeline(res: dict, out: Path) -> Figure | None:
    runs = {k: v for k, v in res.items() if k.startswith("pipeline-")}
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (stem, p) in enumerate(sorted(runs.items())):
        st = sorted(p["stages"], key=int)
        color = f"C{i}"
        ax.plot([int(s) for s in st], [p["stages"][s]["tokens_per_s"] for s in st], "-o", color=color,
                label=f"ring over gRPC, {p['codec']} ({stem})")
        mono = [p["stages"][s].get("monolithic_tokens_per_s", p.get("monolithic_tokens_per_s")) for s in st]
        ax.plot([int(s) for s in st], mono, ":", color=color, label=f"monolithic ceiling ({stem})")
    ax.set_xticks(sorted({int(s) for p in runs.values() for s in p["stages"]}))
    ax.set_xlabel("stages (processes)")
    ax.set_ylabel("decode tokens/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("SmolLM2-135M pipeline decode throughput")
    _save(fig, out / "pipeline.png")
    return Figure(out / "pipeline.png", "Pipeline decode throughput vs number of stages, monolithic as the ceiling",
                  tuple(sorted(runs)), "pipeline")


def fig_gas(res: dict, out: Path) -> Figure | None:
    g = res.get("gas-replicas")
    if not g:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    calls = list(g["rows"][0]["calls"])
    bottom = [0] * len(g["rows"])
    xs = [str(r["replicas"]) for r in g["rows"]]
    for c in calls:
        vals = [r["calls"][c] / 1000 for r in g["rows"]]
        ax.bar(xs, vals, bottom=bottom, label=c)
        bottom = [a + b for a, b in zip(bottom, vals)]
    for i, t in enumerate(bottom):
        ax.text(i, t, f"{t:.0f}k", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("replicas (3 hops each)")
    ax.set_ylabel("gas per job (thousands)")
    ax.legend(fontsize=8)
    ax.set_title("Gas per job by call (steady state)")
    _save(fig, out / "gas.png")
    return Figure(out / "gas.png", "Gas per job, by call, for 1, 3 and 5 replicas", ("gas-replicas",), "gas")


def fig_routing(res: dict, out: Path) -> Figure | None:
    r = res.get("routing")
    if not r:
        return None
    qs = r["quality"]
    labels = [f"{q['nodes']} nodes\n{q['blocks']} blocks, R={q['replicas']}" for q in qs]
    fig, ax = plt.subplots(figsize=(7, 4))
    w = 0.38
    ax.bar([i - w / 2 for i in range(len(qs))], [q["random_over_router_geomean"] or 0 for q in qs], w, label="random plan / router")
    ax.bar([i + w / 2 for i in range(len(qs))], [q["greedy_over_router_geomean"] or 0 for q in qs], w, label="greedy plan / router")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks(range(len(qs)), labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("predicted latency ratio (geomean; >1: router faster)")
    ax.legend(fontsize=8)
    ax.set_title("Router plans vs random and greedy on simulated heterogeneous networks")
    _save(fig, out / "routing.png")
    return Figure(out / "routing.png", "Routing: predicted latency of random and greedy plans relative to the router's", ("routing",), "routing")


def fig_disagree(res: dict, out: Path, stem: str) -> Figure | None:
    d = res.get(stem)
    if not d:
        return None
    pairs = d["pairs"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.bar(list(pairs), [100 * p["differ_frac"] for p in pairs.values()], color="tab:red")
    for i, p in enumerate(pairs.values()):
        a.text(i, 100 * p["differ_frac"], f"{p['differ']}/{p['prompts']}", ha="center", va="bottom", fontsize=8)
    a.set_ylim(0, max(5, 110 * max(p["differ_frac"] for p in pairs.values())))
    a.set_ylabel(f"prompts whose {d['tokens']} token ids differ (%)")
    a.tick_params(axis="x", rotation=20, labelsize=8)
    a.set_title(f"vs {d['reference']['name']} reference on {d['device_name']}")
    for i, (name, p) in enumerate(pairs.items()):
        if p["first_steps"]:
            b.scatter(p["first_steps"], [max(m, 1e-4) for m in p["ref_margin_at_divergence"]], label=name, s=18,
                      color=f"C{i}")
    q = next(iter(pairs.values()))["ref_margin_all_steps_q"]
    b.axhline(q["p50"], color="k", ls=":", lw=0.8, label=f"median margin, all steps ({q['p50']:.2f})")
    b.set_xlabel("first divergent step")
    b.set_ylabel("reference top-1 minus top-2 logit there")
    b.set_xlim(-1, d["tokens"])
    b.set_yscale("log")
    b.set_ylim(1e-4, 10)
    b.grid(alpha=0.3)
    b.legend(fontsize=7)
    name = f"{stem}.png"
    fig.suptitle(f"Honest disagreement, {d['prompts']} prompts x {d['tokens']} greedy tokens, {d['model']}")
    _save(fig, out / name)
    return Figure(out / name, f"Honest disagreement between replicas ({d['device_name']})", (stem,), stem)


def fig_verify(res: dict, out: Path) -> Figure | None:
    """Noise on one hop: share caught at that hop vs size; honest chunk errors per mix against the tolerance."""
    v = res.get("verify")
    if not v:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    noise = [r for r in v["tamper"] if r["kind"] == "noise"]
    for hop in sorted({r["hop"] for r in noise}):
        rs = sorted((r for r in noise if r["hop"] == hop), key=lambda r: r["param"])
        xs = [r["param"] for r in rs]
        a.plot(xs, [100 * r["attributed"] / r["runs"] for r in rs], "-o", color=f"C{hop}", label=f"caught at hop {hop}")
        a.plot(xs, [100 * r["output_changed"] / r["runs"] for r in rs], ":", color=f"C{hop}",
               label=f"output changed (hop {hop})")
    a.set_xscale("log")
    a.set_xlabel("noise on the hop's output (x row RMS)")
    a.set_ylabel("runs (%)")
    a.set_ylim(-5, 105)
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
    a.set_title("tampered hop: caught and attributed vs noise size")
    mixes = list(v["honest"])
    worst = [max(m["max_chunk_median"] for m in v["honest"][x].values()) for x in mixes]
    cls = [next(iter(v["honest"][x].values()))["cls"] for x in mixes]
    b.bar(mixes, [max(w, 1e-9) for w in worst], color=["tab:blue" if c == "fp32" else "tab:orange" for c in cls])
    for c, color, ls in (("fp32/lossy", "tab:blue", "--"), ("fp32/lossless", "tab:blue", ":"),
                         ("bf16/lossy", "tab:orange", "--")):
        if c in v["calibration"]:
            b.axhline(v["calibration"][c]["tolerance"]["fp_median"], color=color, ls=ls, lw=1,
                      label=f"{c} tolerance (chunk median)")
    b.set_yscale("log")
    b.set_ylabel("largest chunk median error (x row RMS)")
    b.tick_params(axis="x", rotation=25, labelsize=7)
    b.legend(fontsize=7)
    b.grid(axis="y", alpha=0.3)
    b.set_title("honest replicas: largest fingerprint error")
    fig.suptitle(f"Verification by re-execution, {v['model']}, {v['tokens']} tokens")
    _save(fig, out / "verify.png")
    return Figure(out / "verify.png", "Verification: tampered hops caught vs noise size; honest fingerprint errors "
                  "against the tolerances", ("verify",), "verify")


def make_all(res: dict, out: Path = FIGURES) -> list[Figure]:
    """Every figure whose results exist."""
    figs = [fig_language(res, out), fig_minilm(res, out), fig_vision(res, out), fig_wire(res, out),
            fig_memory(res, out), fig_pipeline(res, out), fig_gas(res, out), fig_routing(res, out),
            fig_verify(res, out)]
    figs += [fig_disagree(res, out, k) for k in sorted(res) if k.startswith("disagree-")]
    return [f for f in figs if f is not None]


def main(argv: list[str] | None = None) -> int:
    for f in make_all(load_results()):
        print(f.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
