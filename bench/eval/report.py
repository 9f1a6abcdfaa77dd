"""Render bench/REPORT.md from the result files and figures (pure: dicts in, Markdown out).

:func:`render` takes the results keyed by file stem (see
:func:`bench.plots.load_results`) and the figures drawn from them, and
returns the whole report. Sections whose results are missing say so instead
of disappearing, so a partial run is visibly partial. The honest-disagreement
conclusions live in :mod:`bench.eval.report_disagree`, supported models and
embedding commitments in :mod:`bench.eval.report_models`; provenance, stale and
pending files in :mod:`bench.eval.report_provenance`.
"""

from __future__ import annotations

from pathlib import Path

from bench.eval.report_disagree import disagree_section
from bench.eval.report_models import models_section
from bench.eval.report_provenance import (
    HEADLINE_RULE,
    headline_note,
    pending_section,
    provenance,
    provenance_section,
    stale_note,
)
from bench.eval.report_scale import scale_bullets, scale_section
from bench.eval.report_verify import GOAL_RATIO, honest_only, verify_section
from bench.provenance import describe


def table(head: list[str], rows: list[list]) -> str:
    """A Markdown table; floats keep at most 4 significant decimals."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "–" if v is None else str(v)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def figure_block(fig, res: dict, root: Path) -> str:
    rel = fig.path.relative_to(root) if fig.path.is_relative_to(root) else fig.path
    src = "; ".join(f"{s}: {provenance(res[s])}" for s in fig.sources if s in res)
    return (f"![{fig.title}]({rel.as_posix()})\n\n*{fig.title}. Data: {src}. "
            f"Drawn by `python -m bench.plots` (Agg backend).*\n")


def _missing(stem: str) -> str:
    return f"_Not measured in this run: `bench/results/{stem}.json` is missing._\n"


def accuracy_section(res: dict) -> str:
    out = ["## 1. Accuracy vs compression\n"]
    runs = [res[k]["language"] for k in ("codec-cpu", "codec-block4096-cpu") if res.get(k, {}).get("language")]
    if runs:
        cuts = sorted(runs[0]["cuts"], key=int)
        rows = []
        for lang in runs:
            for c in lang["cuts"][cuts[0]]:
                rows.append([c, lang["block"]] + [f"{lang['cuts'][k][c]['perplexity_vs_fp32_pct']:+.3f}% / "
                                                  f"{100 * lang['cuts'][k][c]['top1_agreement']:.2f}%" for k in cuts])
        q = res.get("quant-cpu", {}).get("models", {}).get("smollm2-135m")
        if q:
            rows.append(["int8-mixed weights", "–"] + [f"{100 * (q['int8_metric'] / q['fp32_metric'] - 1):+.3f}% / "
                                                         f"{100 * q['top1_agreement']:.2f}%"] * len(cuts))
        out.append(f"SmolLM2-135M, {runs[0]['tokens']} tokens of `pydoc_data` text in windows of {runs[0]['window']}; "
                   f"fp32 perplexity {runs[0]['fp32_perplexity']}. Cell: perplexity change vs fp32 / top-1 agreement "
                   f"with fp32 (share of positions with the same argmax). {cuts[-1]} cuts = after every block. "
                   "Weight quantization does not depend on the cuts (same number in every column).\n")
        out.append(table(["scheme", "block"] + [f"cuts: {k}" for k in cuts], rows) + "\n")
        tgt = res.get("codec-cpu", {})
        if "target_met" in tgt:
            out.append(f"Target ({tgt['target']}): **{'met' if tgt['target_met'] else 'MISSED'}**.\n")
    else:
        out.append(_missing("codec-cpu"))
    m = res.get("minilm-cpu")
    if m:
        cuts = sorted({r["cuts"] for r in m["rows"]})
        keyed = {(r["codec"], r["block"], r["cuts"]): r for r in m["rows"]}
        rows = [[c, b] + [f"{keyed[(c, b, k)]['cosine_mean']:.7f} ({keyed[(c, b, k)]['cosine_min']:.7f})" for k in cuts]
                for c, b in dict.fromkeys((r["codec"], r["block"]) for r in m["rows"])]
        w = m["int8_mixed_weights"]
        rows.append(["int8-mixed weights", "–"] + [f"{w['cosine_mean']:.7f} ({w['cosine_min']:.7f})"] * len(cuts))
        out.append(f"all-MiniLM-L6-v2 ({m['layers']} layers), {m['sentences']} English sentences, mean-pooled and "
                   "normalised embeddings. Cell: mean (min) cosine to the fp32 embedding.\n")
        out.append(table(["scheme", "block"] + [f"cuts: {k}" for k in cuts], rows) + "\n")
    else:
        out.append(_missing("minilm-cpu"))
    vis = res.get("codec-cpu", {}).get("vision")
    if vis:
        q = res.get("quant-cpu", {}).get("models", {})
        codecs = list(next(iter(vis.values()))["accuracy"])
        rows = [[n, v["cuts"]] + [f"{100 * v['accuracy'][c]:.2f}%" for c in codecs]
                + [f"{100 * q[n]['int8_metric']:.2f}% ({100 * q[n]['saved_frac']:.0f}% smaller)" if n in q else None]
                for n, v in vis.items()]
        out.append(f"Digits test split ({next(iter(vis.values()))['test_images']} images), cut after every block "
                   "(fewer cuts were not run separately); "
                   "accuracy per activation codec, and with int8-mixed weights (no activation codec).\n")
        out.append(table(["model", "cuts"] + codecs + ["int8-mixed weights"], rows) + "\n")
        flat = [n for n, r in q.items() if r.get("saved_frac") == 0.0]
        if flat:
            out.append(f"Note: int8-mixed quantizes Linear layers only; {', '.join(flat)} has none in its blocks, "
                       "so its weights stay fp32 (nothing saved, nothing lost).\n")
    return "\n".join(out)


def bytes_section(res: dict) -> str:
    out = ["## 2. Bytes on the wire and resident weight memory\n"]
    lang = res.get("codec-cpu", {}).get("language")
    if lang:
        big = res.get("codec-block4096-cpu", {}).get("language")
        k = "3" if "3" in lang["cuts"] else sorted(lang["cuts"], key=int)[0]
        rows = []
        for src in [x for x in (lang, big) if x and k in x["cuts"]]:
            rows += [[c, src["block"], v["bytes_per_token_per_hop"], v["bytes_vs_fp32"]] for c, v in src["cuts"][k].items()]
        if rows and rows[0][3]:
            rows.insert(0, ["fp32", "–", round(rows[0][2] / rows[0][3]), 1.0])
        out.append(f"SmolLM2-135M hidden state per token per hop, measured over the text at {k} cuts.\n")
        out.append(table(["codec", "block", "bytes / token / hop", "vs fp32"], rows) + "\n")
    else:
        out.append(_missing("codec-cpu"))
    m = res.get("memory")
    if m:
        schemes = list(next(iter(m["splits"].values()))[0]["bytes"])
        rows = [[f"{s} shard(s)", f"[{r['start']}, {r['end']})"] + [f"{r['bytes'][x] / 2**20:.1f}" for x in schemes]
                for s, rs in m["splits"].items() for r in rs]
        out.append(f"Resident weights (MiB) of each shard of {m['model']} ({m['counted']}). The head shard holds the "
                   "token embedding and the tail the LM head (tied to it in the unsplit model, so a split pays it "
                   "twice); int8-mixed keeps both in fp32.\n")
        out.append(table(["split", "blocks"] + schemes, rows) + "\n")
    else:
        out.append(_missing("memory"))
    return "\n".join(out)


def pipeline_rows(p: dict) -> list[list]:
    def per_run(r: dict) -> str | None:
        return ", ".join(f"{v:g}" for v in r["runs"]["vs_monolithic"]) if "runs" in r else None
    return [[s, r["tokens_per_s"], r.get("monolithic_tokens_per_s", p.get("monolithic_tokens_per_s")),
             r["vs_monolithic"], per_run(r), r["same_tokens_as_monolithic"]]
            for s, r in sorted(p["stages"].items(), key=lambda x: int(x[0]))]


def pipeline_section(res: dict) -> str:
    out = ["## 3. Pipeline decode throughput\n"]
    runs = {k: v for k, v in res.items() if k.startswith("pipeline-")}
    if not runs:
        return out[0] + _missing("pipeline-cpu")
    for stem, p in sorted(runs.items()):
        out.append(f"`{stem}`: {p['model']}, {p['tokens']} new tokens after a {p['prompt_tokens']}-token prompt, "
                   f"codec {p['codec']}, {p['thread_budget']}; {p['repeats']} runs, {headline_note(stem, p)}"
                   + (" (each column is its own median over the runs).\n" if "headline" in p else ".\n"))
        out.append(table(["stages", "tokens/s", "monolithic tokens/s", "ratio", "ratio per run", "same tokens"],
                         pipeline_rows(p)) + "\n")
        if "target_met" in p:
            out.append(f"Target ({p['target']}): **{'met' if p['target_met'] else 'MISSED'}**.\n")
        out.append(stale_note(stem, p))
    h = res.get("hop-cpu")
    if h:
        out.append(f"What a hop's own CPU work costs per token (`hop-cpu`, codec {h['codec']}, {h['wire_bytes']} bytes "
                   f"on the wire per step): microseconds, warm and right after sweeping {h['sweep_mb']} MB "
                   "(about one stage's weights, which is what a stage's compute does to the caches just before); "
                   f"{headline_note('hop-cpu', h)}.\n")
        out.append(table(["piece", "warm us", "cold us"],
                         [[k, v["warm_us"], v["cold_us"]] for k, v in h["pieces"].items()]) + "\n")
        out.append(stale_note("hop-cpu", h))
    f = res.get("flood-cpu")
    if f:
        ping = f["ping_ms_during_flood"]
        out.append(f"An honest job ({f['model']}, {f['tokens']} tokens) under a flood (`flood-cpu`: {f['flood']}): "
                   f"median {f['median_flood_s']} s against {f['median_quiet_s']} s in quiet, {f['flood_vs_quiet']}x "
                   f"(goal {f['goal']}: **{'met' if f['goal_met'] else 'MISSED'}**; runs {f['quiet_s']} and "
                   f"{f['flood_s']}); Ping during the flood: median {ping['median']} ms, max {ping['max']} ms, "
                   f"{ping['unanswered']} of {ping['sent']} unanswered. Load average "
                   f"{f['load_average_1m']['start']}-{f['load_average_1m']['end']} on {f['cpus']} CPUs.\n")
    return "\n".join(p for p in out if p)


def gas_section(res: dict) -> str:
    out = ["## 4. Gas per job\n"]
    g = res.get("gas-replicas")
    if g:
        calls = list(g["rows"][0]["calls"])
        out.append(f"{g['counted']}; 32 output tokens.\n")
        out.append(table(["replicas"] + calls + ["total"],
                         [[r["replicas"]] + [r["calls"][c] for c in calls] + [r["total"]] for r in g["rows"]]) + "\n")
    else:
        out.append(_missing("gas-replicas"))
    b = res.get("gas")
    if b:
        out.append(f"`bench.gas` (3 replicas x 3 hops, per call): total {b['total']:,} gas, target {b['target']:,}: "
                   f"**{'met' if b['meets_target'] else 'MISSED'}**. Each node's `withdrawEarnings` costs "
                   f"{b['withdraw_earnings_per_node']:,} gas whenever it chooses to withdraw.\n")
    return "\n".join(out)


def routing_section(res: dict) -> str:
    r = res.get("routing")
    if not r:
        return "## 5. Routing\n\n" + _missing("routing")
    t = table(["mode", "nodes", "blocks", "R", "median ms", "p95 ms", "proven optimal"],
              [[x["mode"], x["nodes"], x["blocks"], x["replicas"], x["median_ms"], x["p95_ms"],
                f"{x['proven_optimal']}/{x['runs']}"] for x in r["timing"] + r.get("throughput_mode", [])])
    q = table(["nodes", "blocks", "R", "networks", "random / router", "greedy / router", "greedy / router (min)"],
              [[x["nodes"], x["blocks"], x["replicas"], x["networks"], x["random_over_router_geomean"],
                x["greedy_over_router_geomean"], x["greedy_over_router_min"]] for x in r["quality"]])
    parts = [f"## 5. Routing\n\nPlanning time (target median {r['target_median_ms']} ms), "
             f"{headline_note('routing', r)}:\n\n{t}\n", stale_note("routing", r),
             "Predicted per-token latency of random and greedy plans over the router's (geometric mean; above 1 "
             f"the router's plan is faster). The comparison uses the router's own cost model.\n\n{q}\n"]
    return "\n".join(p for p in parts if p)


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _stale(stem: str, res: dict) -> str:
    return "; stale until rerun (predates provenance)" if stale_note(stem, res) else ""


def summary(res: dict) -> str:
    """Headline bullets: every target with met/missed, and the main measured facts."""
    out = ["## Summary\n"]
    c = res.get("codec-cpu", {})
    if "target_met" in c:
        r = c["language"]["cuts"]["3"]["int8-outlier"]
        out.append(f"- Activation codec ({c['target']}): {_met(c['target_met'])} — {r['bytes_vs_fp32']:.3f} of fp32 "
                   f"bytes, perplexity {r['perplexity_vs_fp32_pct']:+.3f}%, top-1 {100 * r['top1_agreement']:.2f}%.")
    q = res.get("quant-cpu", {}).get("models", {}).get("smollm2-135m")
    if q:
        out.append(f"- int8-mixed weights (SmolLM2): {100 * q['saved_frac']:.0f}% less resident memory, perplexity "
                   f"{100 * (q['int8_metric'] / q['fp32_metric'] - 1):+.2f}%, top-1 agreement {100 * q['top1_agreement']:.1f}%.")
    for stem, p in sorted((k, v) for k, v in res.items() if k.startswith("pipeline-") and "target_met" in v):
        r3 = p["stages"].get("3", {})
        out.append(f"- Pipeline `{stem}` ({p['target']}): {_met(p['target_met'])} — "
                   f"{r3.get('vs_monolithic', '?')} of monolithic at 3 stages{_stale(stem, p)}.")
    g = res.get("gas")
    if g:
        out.append(f"- Gas per job, 3 replicas (target {g['target']:,}): {_met(g['meets_target'])} — {g['total']:,}.")
    r = res.get("routing")
    if r:
        worst = max(t["median_ms"] for t in r["timing"])
        tp = ", ".join(f"throughput mode median {t['median_ms']} ms ({t['proven_optimal']}/{t['runs']} proven optimal)"
                       for t in r.get("throughput_mode", []))
        out.append(f"- Router planning time (target median {r['target_median_ms']} ms, latency mode, 1,000 nodes): "
                   f"{_met(worst <= r['target_median_ms'])} — medians "
                   f"{', '.join(str(t['median_ms']) for t in r['timing'])} ms, p95 up to "
                   f"{max(t['p95_ms'] for t in r['timing'])} ms; {tp or 'throughput mode not measured'}"
                   f"{_stale('routing', r)}.")
    for stem in sorted(k for k in res if k.startswith("disagree-")):
        d = res[stem]
        parts = ", ".join(f"{k} {v['differ']}/{v['prompts']}" for k, v in d["pairs"].items())
        out.append(f"- Honest disagreement on {d['device_name']} (prompts whose {d['tokens']} token ids differ from "
                   f"the fp32 reference): {parts}.")
    out += scale_bullets(res)
    v = res.get("verify")
    if v:
        ratios = ", ".join(f"{c['ratio_median']} at {k} tokens" for k, c in v["cost"].items())
        ok = all(c["ratio_median"] is not None and c["ratio_median"] <= GOAL_RATIO for c in v["cost"].values())
        wide = honest_only(res).values()
        fp = v["false_penalties"] + sum(r["false_penalties"] for r in wide)
        n = v["honest_runs"] + sum(r["honest_runs"] for r in wide)
        out.append(f"- Verification by re-execution: {fp}/{n} honest runs penalised "
                   f"(goal 0: {_met(fp == 0)}); verifier / generation time {ratios} "
                   f"(goal <= {GOAL_RATIO}: {_met(ok)}); {v['fingerprint']['bytes_per_chunk_per_hop']} bytes of "
                   "fingerprint per 32 tokens per hop.")
    return "\n".join(out) + "\n" if len(out) > 1 else ""


def render(res: dict, figs: list, root: Path) -> str:
    """The whole REPORT.md for ``res`` (file stem -> result) and ``figs`` (bench.plots.Figure)."""
    by_sec: dict[str, list] = {}
    for f in figs:
        by_sec.setdefault(f.section or f.sources[0], []).append(f)

    def figs_for(*sections: str) -> str:
        return "\n".join(figure_block(f, res, root) for s in sections for f in by_sec.get(s, []))

    machines = sorted({describe(v["meta"]["machine"]) for v in res.values() if v.get("meta")})
    parts = ["# Tessera evaluation report\n",
             "Generated by `python -m bench.all` (`make bench`) from `bench/results/*.json`; every number below is "
             "read from those files. Machines: " + ("; ".join(machines) if machines else "not recorded") + ". CPU timings "
             "come from a shared 2-core machine where other jobs ran at the same time; treat them as indicative. "
             + HEADLINE_RULE + "\n",
             summary(res), pending_section(res),
             accuracy_section(res), figs_for("accuracy"), bytes_section(res), figs_for("bytes"),
             pipeline_section(res), figs_for("pipeline"), gas_section(res), figs_for("gas"),
             routing_section(res), figs_for("routing")]
    for stem in sorted(k for k in res if k.startswith("disagree-")):
        parts += [disagree_section(res[stem], stem), figs_for(stem)]
    if not any(k.startswith("disagree-") for k in res):
        parts.append("## 6. Honest disagreement\n\n" + _missing("disagree-cpu"))
    parts.append(models_section(res))
    parts += [scale_section(res), figs_for("scale")]
    parts.append((verify_section(res["verify"], honest_only(res)) + figs_for("verify")) if "verify" in res
                 else "## 9. Verification by re-execution\n\n" + _missing("verify"))
    if not any("gpu" in k for k in res):
        parts.append("## GPU\n\n_No GPU results yet: `bash bench/gpu/run.sh` (or `python -m bench.all --device cuda`) "
                     "on a GPU machine writes `pipeline-gpu-*.json`, `concurrency-gpu-*.json` and "
                     "`disagree-gpu-<card>.json`, and this report picks them up._\n")
    parts.append(provenance_section(res))
    return "\n".join(p for p in parts if p).rstrip() + "\n"
