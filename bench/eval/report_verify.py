"""The verification section of REPORT.md (pure: the ``bench.verify`` result in, Markdown out)."""

from __future__ import annotations

GOAL_RATIO = 0.2  # verifier time / generation time


def _g(x) -> str:
    return "–" if x is None else f"{x:.3g}"


def _tolerance_rows(cal: dict) -> list[str]:
    rows = []
    for key, c in cal.items():
        h, t = c["honest_max"], c["tolerance"]
        runs = f"as {c['from']}" if "from" in c else c["runs"]
        rows.append(f"| {key} | {runs} | {_g(h['median'])} / {_g(h['p90'])} | {_g(h['token_gap'])} | "
                    f"{_g(c['growth_max'])} | {_g(t['fp_median'])} / {_g(t['fp_p90'])} | {_g(t['growth'])} | "
                    f"{_g(t['token_gap'])} |")
    return rows


def _honest_rows(honest: dict) -> list[str]:
    rows = []
    for mix, by_mode in honest.items():
        cells = []
        for mode in ("greedy", "sampled"):
            m = by_mode.get(mode)
            cells.append("–" if m is None else f"{m['false_penalties']}/{m['runs']} "
                                               f"({m['runs_with_excused_token_divergence']} excused)")
        any_mode = next(iter(by_mode.values()))
        worst = max(by_mode.values(), key=lambda m: m["max_chunk_median"])
        gap = max(m["max_token_gap"] for m in by_mode.values())
        rows.append(f"| {mix} | {any_mode['cls']} | {cells[0]} | {cells[1]} | {_g(worst['max_chunk_median'])} / "
                    f"{_g(worst['max_chunk_p90'])} | {_g(gap)} |")
    return rows


def _tamper_rows(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        size = "–" if not r["param"] else f"{r['param']:g}"
        out.append(f"| {r['kind']} | {size} | {r['hop']} | {r['mode']} | {r['detected']}/{r['runs']} | "
                   f"{r['attributed']}/{r['runs']} | {_g(r.get('margin'))} | {r['output_changed']}/{r['runs']} |")
    return out


def conclusions(v: dict) -> list[str]:
    """Sentences that follow from the numbers alone."""
    out = []
    fp, n = v["false_penalties"], v["honest_runs"]
    out.append(f"**False penalties**: {fp} of {n} honest runs ({v['prompts']['report']} prompts x "
               f"{len(v['honest'])} mixes x greedy and sampled) were judged anything but honest"
               + (" (goal 0: met)." if fp == 0 else " (goal 0: **missed**)."))
    excused = sum(m["runs_with_excused_token_divergence"] for by in v["honest"].values() for m in by.values())
    if excused:
        out.append(f"**Near-ties**: in {excused} honest runs the replica emitted a token other than the verifier's "
                   "top choice; each was within the class's token tolerance and was excused.")
    rows = v["tamper"]
    big = [r for r in rows if r["kind"] != "noise"]
    missed = [r for r in big if r["attributed"] != r["runs"]]
    out.append(f"**Tampering**: {sum(r['attributed'] for r in big)}/{sum(r['runs'] for r in big)} runs of the "
               f"{len(big)} non-noise tamper cases were caught and attributed to the tampered hop"
               + ("." if not missed else "; not all: " + ", ".join(
                   f"{r['kind']} at hop {r['hop']} ({r['attributed']}/{r['runs']}, blamed {r['blamed']})"
                   for r in missed) + "."))
    caught = v["smallest_noise_caught"]
    out.append("**Where detection stops**: noise on one hop's output (x row RMS) is caught and attributed in every "
               "run down to " + ", ".join(f"{_g(e)} at hop {h}" for h, e in caught.items()) + "; below that, "
               + _below(rows))
    for k, c in v["cost"].items():
        ok = c["ratio_median"] is not None and c["ratio_median"] <= GOAL_RATIO
        out.append(f"**Cost at {k} tokens**: verification took {_g(c['ratio_median'])} of the generation time "
                   f"(median of {c['runs']}; worst {_g(c['ratio_max'])}); goal <= {GOAL_RATIO}: "
                   f"{'met' if ok else '**missed**'}.")
    return out


def _below(rows: list[dict]) -> str:
    small = [r for r in rows if r["kind"] == "noise" and r["attributed"] != r["runs"]]
    if not small:
        return "no smaller size was tried."
    wrong = sum(r["detected"] - r["attributed"] for r in small)
    changed = sum(r["output_changed"] for r in small)
    return (f"{sum(r['runs'] - r['detected'] for r in small)} runs passed as honest ({changed} of them with a changed "
            f"output) and {wrong} were blamed on another hop.")


def honest_only(res: dict) -> dict:
    """The honest-only verify results among ``res`` (file stem -> result), by stem."""
    return {k: r for k, r in res.items() if k.startswith("verify-") and r.get("honest_only")}


def wide_section(stem: str, w: dict) -> list[str]:
    """Lines for an honest-only run (``bench.verify --honest-only``: more prompts, other machines)."""
    m, p = w["meta"], w["prompts"]["report"]
    fp, n = w["false_penalties"], w["honest_runs"]
    mach = m.get("machine", {})
    where = f"{mach.get('cpu', '?')} x {mach.get('cores', '?')} cores" + (f", {mach['gpu']}" if mach.get("gpu") else "")
    return [f"Honest mixes at full size (`{stem}.json`: {p} prompts x {len(w['honest'])} mixes x greedy and "
            f"sampled on {where}; tolerances: {w['tolerances']['source']}; commit {m.get('commit', '?')[:7]}):\n",
            "| mix | class | greedy | sampled | max chunk median / p90 | max token gap |",
            "|---|---|---|---|---|---|", *_honest_rows(w["honest"]), "",
            f"- **False penalties at full size**: {fp} of {n} honest runs were judged anything but honest"
            + (" (goal 0: met)." if fp == 0 else " (goal 0: **missed**)."), ""]


def verify_section(v: dict, wide: dict | None = None) -> str:
    """Markdown for the ``verify`` result, and ``wide``: honest-only runs by file stem (e.g. on a GPU machine)."""
    fp = v["fingerprint"]
    p = v["prompts"]
    load = v.get("load_average", {})
    return "\n".join([
        "## 9. Verification by re-execution\n",
        f"{v['model']}, {v['tokens']} tokens per run; every replica runs in one process (real stages, the job's "
        "codec at each cut, the real sampler and receipts) and is judged by one fp32 verifier in one teacher-forced "
        f"pass. Reported prompts: the first {p['report']} of `bench.eval.prompts` (e.g. \"{v['prompt_examples'][0]}\"); "
        f"calibration: {p['calibration']} other prompts. Fingerprint: {fp['samples_per_chunk']} seeded float32 samples "
        f"per chunk of {fp['chunk_steps']} steps, **{fp['bytes_per_chunk_per_hop']} bytes per chunk per hop**. "
        f"Load average at start / end: {load.get('start')} / {load.get('end')}.\n",
        "Calibrated tolerances (chunk errors in units of the verifier's row RMS; tolerance = 4 x the largest honest "
        "value; growth = 4 x the largest hop-to-hop growth of an upstream tamper's error past the tolerance):\n",
        "| class / codec | calibration runs | honest max median / p90 | honest max token gap | growth seen | tolerance "
        "median / p90 | growth allowed | token gap allowed |",
        "|---|---|---|---|---|---|---|---|", *_tolerance_rows(v["calibration"]), "",
        "Honest mixes: false penalties / runs (runs whose token differed from the verifier's at a near-tie, excused):\n",
        "| mix | class | greedy | sampled | max chunk median / p90 | max token gap |",
        "|---|---|---|---|---|---|", *_honest_rows(v["honest"]), "",
        "Tampered replicas on the route [0,10) [10,20) [20,30), fp32 class, int8-outlier codec (judged with "
        "fp32/lossy):\n",
        "| tamper | size | hop | mode | detected | attributed to the hop | margin | output changed |",
        "|---|---|---|---|---|---|---|---|", *_tamper_rows(v["tamper"]), "",
        "Margin: the smallest, over runs, largest chunk median error at the tampered hop, in units of the fp32/lossy "
        "median tolerance (below 1 the hop's own check passes; a token check or a later hop may still catch it).\n",
        *[f"- {s}" for s in conclusions(v)], "",
        *[line for stem, w in sorted((wide or {}).items()) for line in wide_section(stem, w)]])
