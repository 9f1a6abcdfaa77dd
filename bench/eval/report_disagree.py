"""The honest-disagreement section of REPORT.md and its conclusions (pure).

:func:`conclusions` turns one ``bench.eval.disagree`` result into sentences
that follow from the numbers alone (no wording is fixed in advance), so a
re-run with different outcomes rewrites them truthfully.
"""

from __future__ import annotations


def _is_control(name: str) -> bool:
    return name.endswith("fp32codec")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.1 or x == 0 else f"{100 * x:.1f}%"


def pair_sentence(name: str, p: dict) -> str:
    """One sentence on one pair of replicas."""
    n = p["prompts"]
    if not p["differ"]:
        drift = p.get("margin_drift_max")
        how = ("" if drift is None else " with bitwise-equal top-two margins" if drift == 0 else
               f"; its logits are not bitwise equal (top-two margins differ by up to {drift:.2g}), yet no step was "
               "close enough to a tie to flip")
        return f"**{name}**: the same {p['steps']} token ids as the reference on all {n} prompts{how}."
    steps = sorted(p["first_steps"])
    return (f"**{name}**: {p['differ']}/{n} prompts ({_pct(p['differ_frac'])}) differ, first at step "
            f"{steps[0]}–{steps[-1]} (median {p['first_step_median']:g}); the reference's top-two logit margin at "
            f"that step was at most {max(p['ref_margin_at_divergence']):.3f} (median "
            f"{p['ref_margin_at_divergence_q']['p50']:.3f}), against a median of "
            f"{p['ref_margin_all_steps_q']['p50']:.2f} over all steps; only "
            f"{_pct(p['steps_below_max_divergence_margin'])} of all reference steps are that close to a tie.")


def conclusions(d: dict) -> list[str]:
    """Sentences (Markdown) that state what the result means for plain hash consensus."""
    pairs = d["pairs"]
    honest = {k: v for k, v in pairs.items() if not _is_control(k)}
    out = [pair_sentence(k, v) for k, v in pairs.items()]
    for k, v in pairs.items():
        if _is_control(k) and v["differ"]:
            out.append(f"**Warning**: the lossless control {k} diverged, so the harness itself is not exact; "
                       "treat the other numbers with suspicion.")
    if not honest:
        return out
    worst_name, worst = max(honest.items(), key=lambda kv: kv[1]["differ_frac"])
    total = d["prompts"] * d["tokens"]
    if worst["differ"] == 0:
        out.append(f"**Hash consensus**: none of the honest variations changed a token id over {d['prompts']} prompts "
                   f"x {d['tokens']} tokens ({total} tokens per replica). Plain hash consensus would have punished "
                   f"no honest replica here; with {d['prompts']} prompts this bounds the per-job rate only at about "
                   f"{_pct(3 / d['prompts'])} (95%), so the protocol should still not slash on a hash mismatch alone.")
        return out
    margins = [m for v in honest.values() for m in v["ref_margin_at_divergence"]]
    clean = [k for k, v in honest.items() if v["differ"] == 0]
    out.append(
        f"**Hash consensus**: comparing output hashes would have declared an honest replica wrong in up to "
        f"{_pct(worst['differ_frac'])} of these jobs (worst: {worst_name}, {d['tokens']} tokens per job; every "
        f"further token is one more chance of a near-tie). Every one of the {len(margins)} divergences began at a "
        f"step where the reference's top two logits were within {max(margins):.3f} of each other, i.e. at a "
        "near-tie, never at a confident step." + (f" {', '.join(clean)} agreed with the reference on every prompt." if clean else ""))
    out.append(
        "**Consequence for the protocol**: a mismatched output hash is not evidence of cheating when replicas may "
        "differ in dtype, codec or kernels. Either pin what a job's replicas must run (the plan already names the "
        "codec; dtype and kernel choices would have to be named too), or settle a mismatch by locating the first "
        "divergent step and accepting it when the top-two margin there is below a tolerance (re-executing that one "
        "step as the evidence), and penalise only divergences at confident steps.")
    return out


def disagree_section(d: dict, stem: str) -> str:
    """Markdown for one disagreement result file."""
    gpu = "gpu" in stem
    head = (f"## GPU: honest disagreement on {d['device_name']}\n" if gpu else "## 6. Honest disagreement\n")
    ref = d["reference"]
    rows = []
    for name, p in d["pairs"].items():
        q = p["ref_margin_at_divergence_q"]
        margin = "–" if q["p50"] is None else f"{q['p50']:.3f} / {q['p100']:.3f}"
        step = "–" if p["first_step_median"] is None else f"{p['first_step_median']:g}"
        drift = "–" if p.get("margin_drift_max") is None else f"{p['margin_drift_max']:.2g}"
        rows.append(f"| {name} | {p['differ']}/{p['prompts']} ({_pct(p['differ_frac'])}) | {step} | {margin} | {drift} |")
    below = ", ".join(f"<= {t}: {_pct(v)}" for t, v in d["ref_prompts_with_margin_below"].items())
    allq = next(iter(d["pairs"].values()))["ref_margin_all_steps_q"] if d["pairs"] else {}
    return "\n".join([
        head,
        f"{d['model']}, {d['prompts']} English prompts from `pydoc_data.topics` (e.g. \"{d['prompt_examples'][0]}\") "
        f"x {d['tokens']} greedy tokens. Reference: {ref['name']} ({ref['dtype']}, {ref['threads']} thread(s), "
        f"{ref['device']}, unsplit). Each other replica is compared with it prompt by prompt.\n",
        "| replica vs reference | prompts with different token ids | first divergent step (median) "
        "| reference top-2 margin there (median / max) | largest margin difference before divergence |",
        "|---|---|---|---|---|", *rows, "",
        f"Reference top-two margin over all steps: 1st percentile {allq.get('p1')}, 5th {allq.get('p5')}, "
        f"median {allq.get('p50')}. Prompts with at least one step whose margin is {below}.\n",
        *[f"- {s}" for s in conclusions(d)], ""])
