"""The supported-models and embedding-commitment section of REPORT.md (pure: results in, Markdown out)."""

from __future__ import annotations


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def matrix_lines(m: dict) -> list[str]:
    """What ``bench.models_matrix`` found, per kind: how many rows were exact everywhere, and the refusals."""
    rows = m["rows"]
    out = []
    for kind in dict.fromkeys(r.get("kind", "causal-lm") for r in rows):
        mine = [r for r in rows if r.get("kind", "causal-lm") == kind and r["import"] == "yes"]
        exact = [r["architecture"] for r in mine if r["exact"] and all(r["exact"].values())]
        worst = max((e for r in mine for e in r["max_logit_error"].values()), default=0.0)
        if mine:
            out.append(f"- {kind}: {len(exact)}/{len(mine)} stored architectures exact at 2 and 3 stages and across "
                       f"processes ({', '.join(r['architecture'] for r in mine)}); largest output error {worst:.2g}.")
    refused = [r["architecture"] for r in rows if r["import"] != "yes"]
    if refused:
        out.append(f"- refused with a reason: {', '.join(refused)} (README, Supported models).")
    return out


def commit_table(e: dict) -> list[str]:
    """The embed-commit result as a table: one row per honest mix, the share of texts that disagree per grid."""
    grids = [str(g) for g in e["grids"]]
    head = ("| mix (replica B; A = fp32, fp32 activations, 2 threads) | "
            + " | ".join(f"1/{g}{' (protocol)' if int(g) == e['grid'] else ''}" for g in grids)
            + " | dims that differ | largest value difference |")
    lines = [head, "|---|" + "---|" * (len(grids) + 2)]
    for r in e["rows"]:
        lines.append(f"| {r['mix']} | " + " | ".join(_pct(r["disagree"][g]) for g in grids)
                     + f" | {r['dims_differ_mean']:.2f} | {r['max_abs_diff']:.2g} |")
    return lines


def models_section(res: dict) -> str:
    out = ["## 7. Supported models and embedding commitments\n"]
    m = res.get("models-matrix")
    if m:
        out.append(f"`bench.models_matrix` (tiny seeded models of every architecture, and all-MiniLM-L6-v2 on its "
                   f"real weights):\n")
        out += matrix_lines(m)
        out.append("")
    else:
        out.append("_Not measured in this run: `bench/results/models-matrix.json` is missing._\n")
    e = res.get("embed-commit-cpu")
    if e:
        g, coarse = str(e["grid"]), str(min(e["grids"]))
        agree = [r["mix"] for r in e["rows"] if not r["disagree"][g]]
        rest = [r for r in e["rows"] if r["disagree"][g]]
        out.append(f"An embedding job commits its {e['dims']} values on a 1/{e['grid']} grid. Share of {e['texts']} "
                   "English texts on which two honest replicas commit different words:\n")
        out += commit_table(e)
        line = f"\nReplicas agree on every text in these mixes: {', '.join(agree) or 'none'}."
        if rest:
            at, at_coarse = sorted(r["disagree"][g] for r in rest), sorted(r["disagree"][coarse] for r in rest)
            line += (f" The others disagree on {_pct(at[0])} to {_pct(at[-1])} of texts at the protocol's grid "
                     f"({_pct(at_coarse[0])} to {_pct(at_coarse[-1])} at 1/{coarse}): a lossy step moves some value "
                     "across a rounding boundary. Embedding jobs therefore run with fp32 activations on fp32 "
                     "replicas (`tessera job submit` picks `--codec fp32` for them).")
        out.append(line + "\n")
    else:
        out.append("_Not measured in this run: `bench/results/embed-commit-cpu.json` is missing._\n")
    return "\n".join(out)
