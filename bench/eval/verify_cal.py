"""Calibration of the verifier's tolerances and the study's summaries (pure: run records in, dicts out,
but :func:`tolerances_from`, which reads an earlier result).

A run record is what :func:`bench.eval.verify_lab.record` returns, plus the
keys the study adds (``mix``, ``cls``, ``tol`` (the tolerance key,
:func:`worker.verify.spec.tolerance_key`), ``mode``, ``prompt``; tampered runs
``kind``, ``param``, ``at``). Per tolerance key, each tolerance is
:data:`SAFETY` times the largest honest value seen on the calibration
prompts; ``growth`` is :data:`SAFETY` times the largest factor by which a
chunk's error grew from one hop to the next downstream of a tampered hop,
wherever it grew past the tolerance (the case the allowance exists for).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from worker.verify.spec import TOLERANCES, Tolerance

SAFETY = 4.0  # tolerance = SAFETY x the largest honest value measured
TOKEN_GAP_FLOOR = 1e-2  # logits; fp32 replicas never diverged in calibration, and 0 cannot be scaled
KEYS = tuple(f"{c}/{k}" for c in ("fp32", "bf16", "fp16") for k in ("lossy", "lossless"))


def honest_max(records: Iterable[dict]) -> dict:
    """Largest chunk median, chunk p90 and token gap over honest runs."""
    m = p = g = 0.0
    for r in records:
        for hop in r["chunks"]:
            for med, p90 in hop:
                m, p = max(m, med), max(p, p90)
        g = max([g] + [gap for _, gap in r["gaps"]])
    return {"median": m, "p90": p, "token_gap": g}


def growth_max(records: Iterable[dict], tol_median: float, tol_p90: float) -> float:
    """Largest hop-to-hop growth of a chunk's error below a tampered hop, where it passed the tolerance."""
    worst = 1.0
    for r in records:
        hops = r["chunks"]
        for i in range(r["at"] + 1, len(hops)):
            for (m0, q0), (m1, q1) in zip(hops[i - 1], hops[i]):
                if m1 > tol_median and m0 > 0:
                    worst = max(worst, m1 / m0)
                if q1 > tol_p90 and q0 > 0:
                    worst = max(worst, q1 / q0)
    return worst


def calibrate(honest: Iterable[dict], tampered: Iterable[dict]) -> dict:
    """Per tolerance key: the honest maxima, the growth seen, and the :class:`Tolerance` they give. Keys
    nothing measured take the values of the same class's lossy codec, or else of bf16/lossy
    (``"from"`` says which)."""
    by_key: dict[str, list] = defaultdict(list)
    for r in honest:
        by_key[r["tol"]].append(r)
    tam: dict[str, list] = defaultdict(list)
    for r in tampered:
        tam[r["tol"]].append(r)
    out = {}
    for key, rs in sorted(by_key.items()):
        h = honest_max(rs)
        tm, tq = SAFETY * h["median"], SAFETY * h["p90"]
        g = growth_max(tam.get(key, []), tm, tq)
        tol = Tolerance(fp_median=float(f"{tm:.2g}"), fp_p90=float(f"{tq:.2g}"), growth=float(f"{SAFETY * g:.3g}"),
                        token_gap=float(f"{max(SAFETY * h['token_gap'], TOKEN_GAP_FLOOR):.2g}"))
        out[key] = {"runs": len(rs), "tamper_runs": len(tam.get(key, [])), "honest_max": h, "growth_max": g,
                    "tolerance": tol.__dict__}
    for key in KEYS:
        if key not in out:
            src = next((k for k in (key.split("/")[0] + "/lossy", "bf16/lossy") if k in out and "from" not in out[k]), None)
            if src is not None:
                out[key] = {**out[src], "from": src}
    return out


def tolerances_from(source: str) -> dict[str, Tolerance]:
    """Tolerances to judge with: ``"code"`` for :data:`worker.verify.spec.TOLERANCES`, else the path of an
    earlier ``bench.verify`` result, whose ``calibration`` gives them."""
    if source == "code":
        return dict(TOLERANCES)
    try:
        cal = json.loads(Path(source).read_text())["calibration"]
        return {key: Tolerance(**c["tolerance"]) for key, c in cal.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--tolerances {source!r}: give `code` or a bench.verify result with a calibration "
                         f"({type(exc).__name__}: {exc})") from exc


def honest_summary(records: Iterable[dict]) -> dict:
    """Per mix and mode: runs, false penalties (any verdict but honest) and the excused divergences."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[(r["mix"], r["mode"])].append(r)
    out: dict[str, dict] = defaultdict(dict)
    for (mix, mode), rs in groups.items():
        bad = [r for r in rs if r["verdict"] != "honest"]
        div = [r for r in rs if r["gaps"]]
        out[mix][mode] = {
            "cls": rs[0]["cls"], "runs": len(rs), "false_penalties": len(bad),
            "false_penalty_reasons": [r["reason"] for r in bad],
            "runs_with_excused_token_divergence": len(div) - sum(1 for r in bad if r["gaps"]),
            "max_token_gap": max([g for r in rs for _, g in r["gaps"]], default=0.0),
            "max_chunk_median": max([m for r in rs for hop in r["chunks"] for m, _ in hop], default=0.0),
            "max_chunk_p90": max([q for r in rs for hop in r["chunks"] for _, q in hop], default=0.0)}
    return dict(out)


def tamper_summary(records: Iterable[dict], tol_median: float) -> list[dict]:
    """Per tamper (kind, size, hop): runs, detected, attributed to the tampered hop, outputs changed, and
    ``margin``: the smallest (over runs) largest chunk median at the tampered hop, over ``tol_median``."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in records:
        groups[(r["kind"], r["param"], r["at"], r["mode"])].append(r)
    rows = []
    for (kind, param, at, mode), rs in groups.items():
        worst = min(max(m for m, _ in r["chunks"][at]) if len(r["chunks"]) > at else 0.0 for r in rs)
        rows.append({"kind": kind, "param": param, "hop": at, "mode": mode, "runs": len(rs),
                     "margin": float(f"{worst / tol_median:.3g}"),
                     "detected": sum(r["verdict"] == "faulty" for r in rs),
                     "attributed": sum(r["verdict"] == "faulty" and r["hop"] == at for r in rs),
                     "output_changed": sum(bool(r["output_changed"]) for r in rs),
                     "blamed": sorted({r["hop"] for r in rs if r["verdict"] == "faulty"}),
                     "reasons": sorted({r["reason"].split(":")[0] for r in rs if r["verdict"] == "faulty"})})
    return rows


def smallest_caught(rows: Iterable[dict], kind: str = "noise") -> dict[str, float | None]:
    """Per hop, the smallest ``kind`` size detected and attributed in every run, with every larger size too."""
    by_hop: dict[int, list] = defaultdict(list)
    for r in rows:
        if r["kind"] == kind:
            by_hop[r["hop"]].append(r)
    out = {}
    for hop, rs in sorted(by_hop.items()):
        best = None
        for r in sorted(rs, key=lambda x: -x["param"]):
            if r["attributed"] != r["runs"]:
                break
            best = r["param"]
        out[str(hop)] = best
    return out
