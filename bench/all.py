"""Run every benchmark, write bench/results/*.json, the figures and bench/REPORT.md.

``python -m bench.all`` (what ``make bench`` runs) runs each benchmark as its
own process (``python -m bench.<x> ... --json --save bench/results/<stem>.json``);
the benchmark writes its file itself through :func:`bench._out.emit`, which
records the commit, tree state, machine, command and wall time in ``meta``.
Then it draws the figures (:mod:`bench.plots`) and writes ``bench/REPORT.md``
(:mod:`bench.eval.report`) from every result file present, including ones an
earlier run left (e.g. a GPU run). ``--only routing,pipeline-cpu,hop-cpu``
reruns just those (the timings, best on a quiet machine) and redraws the
report from every file.

``--device cuda`` runs only the pipeline, concurrency and disagreement studies
on the GPU and writes ``pipeline-gpu-<card>.json``, ``concurrency-gpu-<card>.json``,
``hopprofile-gpu-<card>.json`` and ``disagree-gpu-<card>.json`` (SmolLM2); ``bash bench/gpu/run.sh`` measures
1B and 3B Llama shapes on a GPU machine without a virtualenv.
``--report-only`` redraws figures and the report without running anything.
Defaults fit in about 30 minutes on 2 CPU cores, plus the verification study
(``bench.verify``: hours on 2 busy cores; ``--skip verify`` leaves it out, or
raise ``--timeout`` for it); ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import plots, plots_scale
from bench.eval.report import render

logger = logging.getLogger(__name__)
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


@dataclass(frozen=True)
class Step:
    stem: str  # result file stem under bench/results/
    module: str  # python -m <module>
    args: tuple[str, ...]  # arguments besides --json


def cpu_steps(a: argparse.Namespace) -> list[Step]:
    q = a.quick
    return [
        Step("codec-cpu", "bench.codec", ("--tokens", str(256 if q else a.codec_tokens), "--window", "256" if q else "512",
                                          "--cuts", "1,3,29")),
        Step("codec-block4096-cpu", "bench.codec", ("--tokens", str(256 if q else a.codec_tokens), "--window",
                                                    "256" if q else "512", "--cuts", "1,3,29", "--block", "4096",
                                                    "--codecs", "int8-absmax,int8-outlier,int8-dynamic")),
        Step("quant-cpu", "bench.eval.quant", ("--tokens", "128" if q else "1024")),
        Step("minilm-cpu", "bench.eval.minilm", ("--sentences", "16" if q else "100")),
        Step("embed-commit-cpu", "bench.eval.embed_commit", ("--texts", "16" if q else "100")),
        Step("models-matrix", "bench.models_matrix", ("--only", "llama,bert,tiny-resnet-pt2,mamba") if q else
             ("--readme", "README.md")),
        Step("memory", "bench.eval.memory", ("--stages", "1,3")),
        Step("pipeline-cpu", "bench.pipeline", ("--tokens", "8" if q else "64", "--repeats", "1" if q else "3")),
        Step("hop-cpu", "bench.hop", ("--repeats", "20" if q else "200")),
        Step("flood-cpu", "bench.flood", ("--runs", "1" if q else "5", "--tokens", "8" if q else "16")),
        Step("gateway", "bench.gateway", ("--runs", "1" if q else "3")),
        Step("concurrency-cpu", "bench.concurrency", ("--sessions", "1,4" if q else "1,4,16,64", "--tokens",
                                                      "8" if q else "32", "--repeats", "1" if q else "3")),
        Step("hopprofile-cpu", "bench.hopprofile", ("--tokens", "8" if q else "16", "--repeats", "1" if q else "3")),
        Step("load", "bench.load", ("--jobs", "12", "--rate", "2") if q else ()),
        Step("wan", "bench.wan", ("--rtt-ms", "0,50", "--tokens", "8", "--sessions", "4", "--repeats", "1")
             if q else ()),
        Step("gas", "bench.gas", ()),
        Step("gas-replicas", "bench.eval.gas_replicas", ("--replicas", "1,3,5")),
        Step("routing", "bench.routing", ("--runs", "3", "--seeds", "2") if q else ()),
        Step("disagree-cpu", "bench.eval.disagree", ("--prompts", "3" if q else str(a.prompts),
                                                     "--tokens", "4" if q else str(a.tokens), "--control")),
        Step("verify", "bench.verify", ("--prompts", "2", "--cal-prompts", "2", "--cal-tamper-prompts", "1",
                                        "--tamper-prompts", "1", "--cost-prompts", "1", "--tokens", "8",
                                        "--long-tokens", "16") if q else ("--prompts", str(a.prompts))),
    ]


def card_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3`` (pure)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def gpu_steps(a: argparse.Namespace) -> list[Step]:
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is visible to torch; run on a GPU machine or use --device cpu")
    slug = card_slug(torch.cuda.get_device_name())
    return [Step(f"pipeline-gpu-{slug}", "bench.pipeline", ("--device", "cuda", "--tokens", "8" if a.quick else "64")),
            Step(f"concurrency-gpu-{slug}", "bench.concurrency", ("--device", "cuda", "--sessions", "1,16",
                                                                  "--unbatched", "", "--window-ms", "2")),
            Step(f"hopprofile-gpu-{slug}", "bench.hopprofile", ("--device", "cuda", "--window-ms", "2")),
            Step(f"disagree-gpu-{slug}", "bench.eval.disagree", ("--device", "cuda", "--prompts",
                                                                 "3" if a.quick else str(a.prompts),
                                                                 "--tokens", "4" if a.quick else str(a.tokens),
                                                                 "--control"))]


def select(steps: list[Step], only: str | None, skip: str | None) -> list[Step]:
    """The steps named by ``--only`` (all if None) less those named by ``--skip`` (pure).

    Raises SystemExit naming the known stems when a name matches no step."""
    stems = [s.stem for s in steps]
    wanted = set(only.split(",")) if only else set(stems)
    dropped = set(skip.split(",")) if skip else set()
    unknown = sorted((wanted | dropped) - set(stems))
    if unknown:
        raise SystemExit(f"unknown result stem(s) {', '.join(unknown)}; known here: {', '.join(stems)}")
    return [s for s in steps if s.stem in wanted and s.stem not in dropped]


def run_step(step: Step, results: Path, timeout_s: float) -> bool:
    """Run one benchmark process, which writes its result file; False (and a message) on failure."""
    out = results / f"{step.stem}.json"
    shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    cmd = [sys.executable, "-m", step.module, *step.args, "--json", "--save", str(shown)]
    print(f"== {step.stem}: python -m {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"!! {step.stem} took over {timeout_s:.0f} s; stopped, {out.name} left as it was", file=sys.stderr)
        return False
    if proc.returncode != 0:
        print(f"!! {step.stem} exited with {proc.returncode}; {out.name} left as it was", file=sys.stderr)
        return False
    print(f"== {step.stem}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return True


def write_report(results: Path, figures: Path, report: Path) -> None:
    res = plots.load_results(results)
    figs = plots.make_all(res, figures) + plots_scale.make_scale(res, figures)
    report.write_text(render(res, figs, report.parent))
    print(f"wrote {report} with {len(figs)} figures", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu: every benchmark; cuda: pipeline and disagreement on the GPU")
    ap.add_argument("--only", help="comma-separated result stems to run (e.g. gas,routing)")
    ap.add_argument("--skip", help="comma-separated result stems to leave out")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a measurement")
    ap.add_argument("--prompts", type=int, default=50, help="disagreement study: prompts")
    ap.add_argument("--tokens", type=int, default=32, help="disagreement study: greedy tokens per prompt")
    ap.add_argument("--codec-tokens", type=int, default=2048, help="codec study: tokens of text scored")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per benchmark")
    ap.add_argument("--results", default=str(BENCH / "results"), help="folder for result JSON files")
    ap.add_argument("--figures", default=str(BENCH / "figures"), help="folder for PNG figures")
    ap.add_argument("--report", default=str(BENCH / "REPORT.md"))
    ap.add_argument("--report-only", action="store_true", help="only redraw figures and the report")
    args = ap.parse_args(argv)
    results = Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    failed = []
    if not args.report_only:
        steps = gpu_steps(args) if args.device.startswith("cuda") else cpu_steps(args)
        t0 = time.perf_counter()
        for s in select(steps, args.only, args.skip):
            if not run_step(s, results, args.timeout):
                failed.append(s.stem)
        print(f"benchmarks took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    write_report(results, Path(args.figures), Path(args.report))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
