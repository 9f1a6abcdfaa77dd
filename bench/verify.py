"""Verification by re-execution: false penalties on honest replicas, detection of dishonest ones, cost.

Every replica runs in one process (real stages, the job's codec at each cut,
the real sampler, real receipts: :mod:`worker.verify.inprocess`) and is judged
by one fp32 verifier on the CPU (:mod:`worker.verify.reexec`). In order:

1. calibration: the honest mixes on prompts kept apart from the reported ones
   (English prompts 60 on, from ``bench.eval.prompts``), plus noise on hop 0
   or 1 at several sizes, give each dtype class's tolerances
   (:func:`bench.eval.verify_cal.calibrate`);
2. honest mixes (fp32 at 1 and 2 threads, int8-outlier codec at different
   cut points, the fp32 codec, bf16 and bf16+fp32 replicas in the bf16 class;
   ``--device cuda`` adds GPU replicas) on the reported prompts, greedy and
   sampled: every verdict but "honest" is a false penalty;
3. tampering on the 3-hop route (each hop in turn): noise of several sizes on
   what it sends, a skipped block, int8 weights or bf16 compute where fp32 was
   paid, another model of the same shape, a changed prompt (head), a wrong
   sampling seed (tail): detected, and attributed to the tampered hop?
4. cost: verifier time / generation time at ``--tokens`` and ``--long-tokens``.

``--honest-only`` runs step 2 alone, judged with ``--tolerances`` (``code``: those in
:data:`worker.verify.spec.TOLERANCES`, or an earlier result's calibration), for the
mixes ``--mixes`` names, spread over ``--jobs`` processes (how
bench/gpu/verify.sh measures CPU against GPU replicas).

    python -m bench.verify --json [--prompts 50] [--cal-prompts 12] [--tamper-prompts 8] [--save FILE]
    python -m bench.verify --honest-only [--tolerances code|FILE] [--mixes A,B] [--jobs N] [--device cuda]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from transformers import AutoTokenizer

from bench._out import emit
from bench.eval.prompts import english_prompts
from bench.eval.tamper import changed_prompt, cheap_hop, noisy_hop, other_model_hop, skip_block_hop, wrong_seed
from bench.eval.verify_cal import calibrate, honest_summary, smallest_caught, tamper_summary, tolerances_from
from bench.eval.verify_lab import LOOSE, THREE, Lab, Mix, honest_mixes, select_mixes, spec_for, with_alter
from worker.store import resolve
from worker.verify.fingerprint import CHUNK_STEPS, Fingerprint, K
from worker.verify.spec import Tolerance, tolerance_key

CAL_FROM = 60  # calibration prompts start here; reported prompts come from the first 60
NOISE = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4)  # noise sizes (x row RMS) on a tampered hop's output
CAL_NOISE = (1e-2, 1e-3, 1e-4, 1e-5)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def modes(temperature_milli: int) -> list[tuple[str, int]]:
    return [("greedy", 0), ("sampled", temperature_milli)]


def run_honest(lab: Lab, mixes, prompts, first: int, tokens: int, temp: int, tols) -> tuple[list[dict], dict]:
    """Every mix on every prompt in both modes; also the outputs of the first mix (tamper baselines)."""
    recs, outputs = [], {}
    for mix in mixes:
        t0 = time.perf_counter()
        for mode, t in modes(temp):
            for j, p in enumerate(prompts):
                spec = spec_for(mix.cls, mix.codec, tokens, t, seed=1000 + first + j)
                key = tolerance_key(spec)
                rec, out = lab.run(lab.hops(mix), spec, p, tols.get(key, LOOSE), threads=mix.threads,
                                   job=1 + first + j)
                recs.append({**rec, "mix": mix.name, "cls": mix.cls, "tol": key, "mode": mode, "prompt": first + j})
                outputs[(mix.name, mode, first + j)] = out
        bad = sum(r["verdict"] != "honest" for r in recs if r["mix"] == mix.name)
        say(f"honest {mix.name}: {2 * len(prompts)} runs in {time.perf_counter() - t0:.0f} s, {bad} not honest")
    return recs, outputs


def _one_mix(md: Path, mix: Mix, prompts, first: int, tokens: int, temp: int, tols) -> list[dict]:
    """One mix's honest runs on some prompts, in a process of its own (its own Lab: verifier and hops)."""
    return run_honest(Lab(md), [mix], prompts, first, tokens, temp, tols)[0]


def slices(n_mixes: int, n_prompts: int, jobs: int) -> list[tuple[int, int, int]]:
    """(mix index, first prompt, prompt count) per task: each mix's prompts cut into about
    ``jobs / n_mixes`` runs of consecutive prompts (at least one task per mix)."""
    per = max(1, min(n_prompts, jobs // n_mixes))
    size = -(-n_prompts // per)
    return [(m, o, min(size, n_prompts - o)) for m in range(n_mixes) for o in range(0, n_prompts, size)]


def run_honest_jobs(md: Path, mixes, prompts, first: int, tokens: int, temp: int, tols, jobs: int) -> list[dict]:
    """:func:`run_honest`'s records, in its order, from ``jobs`` spawned processes (:func:`slices`); a run's
    seed and job id depend on its prompt's index alone, so the runs are those of one process."""
    if jobs <= 1:
        return run_honest(Lab(md), mixes, prompts, first, tokens, temp, tols)[0]
    tasks = slices(len(mixes), len(prompts), jobs)
    with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_one_mix, md, mixes[m], prompts[o:o + n], first + o, tokens, temp, tols)
                   for m, o, n in tasks]
        recs = [r for f in futures for r in f.result()]
    order = {m.name: i for i, m in enumerate(mixes)}
    mode_order = {name: i for i, (name, _) in enumerate(modes(temp))}
    return sorted(recs, key=lambda r: (order[r["mix"]], mode_order[r["mode"]], r["prompt"]))


def honest_only(a, md: Path, texts: list[str], report: list[list[int]], mixes: list[Mix]) -> dict:
    """Step 2 alone, judged with the tolerances ``a.tolerances`` names: the full result's honest keys."""
    t0 = time.perf_counter()
    tols = tolerances_from(a.tolerances or "code")
    honest = run_honest_jobs(md, mixes, report, 0, a.tokens, a.temperature_milli, tols, a.jobs)
    return {
        "bench": "verify", "model": a.model, "tokens": a.tokens, "temperature_milli": a.temperature_milli,
        "prompts": {"report": a.prompts}, "prompt_examples": texts[:2],
        "threads": {"verifier": 1, "replicas": "1 (2 where a mix says so)", "processes": a.jobs},
        "fingerprint": {"samples_per_chunk": K, "chunk_steps": CHUNK_STEPS},
        "honest_only": True, "mixes": [m.name for m in mixes],
        "tolerances": {"source": a.tolerances or "code", "values": {k: t.__dict__ for k, t in sorted(tols.items())}},
        "honest": honest_summary(honest),
        "false_penalties": sum(r["verdict"] != "honest" for r in honest), "honest_runs": len(honest),
        "seconds": round(time.perf_counter() - t0, 1), "runs": {"honest": honest},
    }


def calibration_tampers(lab: Lab, prompts, tokens: int) -> list[dict]:
    """Noise on hop 0 or 1 of fp32 and bf16 replicas: how a deviation grows downstream."""
    recs = []
    for cls, codec_name in (("fp32", "int8-outlier"), ("fp32", "fp32"), ("bf16", "int8-outlier")):
        base = [lab.hop(i, a, b, cls) for i, (a, b) in enumerate(THREE)]
        spec = spec_for(cls, codec_name, tokens, 0, 0)
        for at in (0, 1):
            for eps in CAL_NOISE:
                for j, p in enumerate(prompts):
                    hops = with_alter(base, at, noisy_hop(base[at], eps, seed=j))
                    rec, _ = lab.run(hops, spec, p, LOOSE, job=900 + j)
                    recs.append({**rec, "cls": cls, "tol": tolerance_key(spec), "kind": "noise", "param": eps,
                                 "at": at, "mode": "greedy"})
    return recs


def tamper_cases(lab: Lab, md, vocab: int):
    """(kind, size, hop, mode, hops, gen_prompt(p), gen_params(params)) for the 3-hop fp32 route."""
    base = [lab.hop(i, a, b) for i, (a, b) in enumerate(THREE)]
    same_p, same_g = (lambda p: p), (lambda g: g)
    for at, (a, b) in enumerate(THREE):
        for eps in NOISE:
            yield "noise", eps, at, "greedy", lambda j, at=at, eps=eps: with_alter(base, at, noisy_hop(base[at], eps, j)), same_p, same_g
        skip = (a + b) // 2
        hop = skip_block_hop(md, base[at].node, a, b, skip)
        yield "skip-block", skip, at, "greedy", lambda j, h=hop, at=at: with_alter(base, at, h), same_p, same_g
        for how in ("int8-weights", "bf16"):
            hop = cheap_hop(md, base[at].node, a, b, how)
            yield how, 0, at, "greedy", lambda j, h=hop, at=at: with_alter(base, at, h), same_p, same_g
        for rel in (1e-2, 1e-3):
            hop = other_model_hop(md, base[at].node, a, b, rel, seed=at)
            yield "other-model", rel, at, "greedy", lambda j, h=hop, at=at: with_alter(base, at, h), same_p, same_g
    yield "changed-prompt", 0, 0, "greedy", lambda j: base, (lambda p: changed_prompt(p, vocab)), same_g
    yield "wrong-seed", 0, 2, "sampled", lambda j: base, same_p, wrong_seed


def run_tampers(lab: Lab, md, vocab, prompts, tokens, temp, tol: Tolerance, baseline: dict) -> list[dict]:
    recs = []
    for kind, param, at, mode, hops_for, gen_p, gen_g in tamper_cases(lab, md, vocab):
        t0 = time.perf_counter()
        for j, p in enumerate(prompts):
            spec = spec_for("fp32", "int8-outlier", tokens, 0 if mode == "greedy" else temp, seed=1000 + j)
            rec, out = lab.run(hops_for(j), spec, p, tol, job=1 + j, gen_prompt=gen_p(p), gen_params=gen_g(spec.params))
            recs.append({**rec, "cls": "fp32", "tol": "fp32/lossy", "kind": kind, "param": param, "at": at, "mode": mode, "prompt": j,
                         "output_changed": out != baseline.get(("fp32-3hop", mode, j))})
        got = [r for r in recs[-len(prompts):] if r["verdict"] == "faulty" and r["hop"] == at]
        say(f"tamper {kind} {param:g} at hop {at}: {len(got)}/{len(prompts)} caught and attributed "
            f"({time.perf_counter() - t0:.0f} s)")
    return recs


def cost(records: list[dict]) -> dict:
    ratios = [r["verify_s"] / r["gen_s"] for r in records]
    return {"runs": len(records), "tokens": records[0]["tokens"] if records else 0,
            "ratio_median": round(statistics.median(ratios), 4) if ratios else None,
            "ratio_max": round(max(ratios), 4) if ratios else None,
            "gen_s_median": round(statistics.median(r["gen_s"] for r in records), 3) if records else None,
            "verify_s_median": round(statistics.median(r["verify_s"] for r in records), 3) if records else None,
            "ratios": [round(x, 4) for x in ratios]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="stored causal LM name or directory")
    ap.add_argument("--prompts", type=int, default=50, help="reported prompts per honest mix and mode (<= 60)")
    ap.add_argument("--cal-prompts", type=int, default=12, help="calibration prompts (<= 57), apart from the reported")
    ap.add_argument("--cal-tamper-prompts", type=int, default=3, help="calibration prompts for the growth of noise")
    ap.add_argument("--tamper-prompts", type=int, default=8, help="reported prompts per tamper case")
    ap.add_argument("--cost-prompts", type=int, default=5, help="prompts timed at --long-tokens")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per run")
    ap.add_argument("--long-tokens", type=int, default=128, help="tokens of the long cost runs")
    ap.add_argument("--temperature-milli", type=int, default=800, help="temperature of the sampled runs x 1000")
    ap.add_argument("--device", default="cpu", help="also run honest replicas on this device (e.g. cuda)")
    ap.add_argument("--mixes", help="with --honest-only, a comma list: run only these honest mixes (default: all)")
    ap.add_argument("--honest-only", action="store_true", help="only the honest mixes on the reported prompts, "
                    "judged with --tolerances: no calibration, tampering or cost")
    ap.add_argument("--tolerances", help="with --honest-only: `code` (worker.verify.spec.TOLERANCES, the default) "
                    "or an earlier bench.verify result whose calibration to judge with")
    ap.add_argument("--jobs", type=int, default=1, help="with --honest-only: processes, each running one mix on a "
                    "run of consecutive prompts")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    a = ap.parse_args(argv)
    if not 1 <= a.prompts <= CAL_FROM or not 1 <= a.cal_prompts <= 117 - CAL_FROM:
        raise SystemExit(f"--prompts must be 1..{CAL_FROM} and --cal-prompts 1..{117 - CAL_FROM}")
    if not a.honest_only and (a.mixes or a.tolerances or a.jobs != 1):
        raise SystemExit("--mixes, --tolerances and --jobs go with --honest-only (a full run calibrates its "
                         "tolerances on every mix)")
    if not 1 <= a.jobs <= 16:
        raise SystemExit("--jobs must be 1..16")
    try:
        mixes = select_mixes(honest_mixes(a.device), a.mixes)
        if a.honest_only:
            tolerances_from(a.tolerances or "code")  # a bad file fails before any model loads
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    load0, t_start = os.getloadavg(), time.perf_counter()
    md = resolve(a.model)
    tok = AutoTokenizer.from_pretrained(md)
    texts = english_prompts(CAL_FROM + a.cal_prompts)
    report = [tok(t)["input_ids"] for t in texts[: a.prompts]]
    if a.honest_only:
        return emit(honest_only(a, md, texts, report, mixes), a.save, a.json)
    cal = [tok(t)["input_ids"] for t in texts[CAL_FROM:]]
    lab = Lab(md)

    cal_honest, _ = run_honest(lab, mixes, cal, CAL_FROM, a.tokens, a.temperature_milli, {})
    cal_tamper = calibration_tampers(lab, cal[: a.cal_tamper_prompts], a.tokens)
    calib = calibrate(cal_honest, cal_tamper)
    tols = {key: Tolerance(**c["tolerance"]) for key, c in calib.items()}
    say(f"calibrated: {tols}")

    honest, outputs = run_honest(lab, mixes, report, 0, a.tokens, a.temperature_milli, tols)
    tampered = run_tampers(lab, md, len(tok), report[: a.tamper_prompts], a.tokens, a.temperature_milli,
                           tols["fp32/lossy"], outputs)
    long_runs = [lab.run(lab.hops(mixes[0]), spec_for("fp32", "int8-outlier", a.long_tokens, 0, 0), p,
                         tols["fp32/lossy"], job=500 + j)[0] for j, p in enumerate(report[: a.cost_prompts])]
    rows = tamper_summary(tampered, tols["fp32/lossy"].fp_median)
    fp_bytes = len(Fingerprint(1, 1, bytes(4 * K)).to_bytes())
    short = [r for r in honest if r["mix"] == mixes[0].name]
    result = {
        "bench": "verify", "model": a.model, "tokens": a.tokens, "temperature_milli": a.temperature_milli,
        "prompts": {"report": a.prompts, "calibration": a.cal_prompts, "calibration_tamper": a.cal_tamper_prompts,
                    "tamper": a.tamper_prompts, "cost_long": a.cost_prompts},
        "prompt_examples": texts[:2], "threads": {"verifier": 1, "replicas": "1 (2 where a mix says so)"},
        "fingerprint": {"samples_per_chunk": K, "chunk_steps": CHUNK_STEPS, "bytes_per_chunk_per_hop": fp_bytes},
        "calibration": calib,
        "honest": honest_summary(honest),
        "false_penalties": sum(r["verdict"] != "honest" for r in honest), "honest_runs": len(honest),
        "tamper": rows, "smallest_noise_caught": smallest_caught(rows),
        "cost": {str(a.tokens): cost(short), str(a.long_tokens): cost(long_runs)},
        "load_average": {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in os.getloadavg()]},
        "seconds": round(time.perf_counter() - t_start, 1),
        "runs": {"calibration_honest": cal_honest, "calibration_tamper": cal_tamper, "honest": honest,
                 "tamper": tampered, "long": long_runs},
    }
    return emit(result, a.save, a.json)


if __name__ == "__main__":
    sys.exit(main())
