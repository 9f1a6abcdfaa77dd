"""Replicas and their verification, run in one process for the verification study.

A :class:`Mix` is one honest way to run a replica (route, per-hop compute
dtype, threads, codec, device) inside a job's dtype class; :class:`Lab`
loads each hop once, runs replicas with :func:`worker.verify.inprocess.run_replica`,
verifies them with one :class:`worker.verify.reexec.Verifier` (fp32, CPU) and
returns each run as a plain record for ``bench/results/verify.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from eth_account import Account

from bench._procs import bench_key
from proto.types import Hop, JobId, NodeId
from worker import codec
from worker.planview import GenParams
from worker.verify.inprocess import LocalHop, load_hop, run_replica
from worker.verify.reexec import Report, Verifier
from worker.verify.spec import ExecSpec, Tolerance

logger = logging.getLogger(__name__)

LOOSE = Tolerance(fp_median=float("inf"), fp_p90=float("inf"), growth=1.0, token_gap=float("inf"))
THREE = ((0, 10), (10, 20), (20, 30))  # the route the tampering study uses


@dataclass(frozen=True)
class Mix:
    """One honest configuration of a replica."""

    name: str
    cls: str  # dtype class the job pays for
    spans: tuple[tuple[int, int], ...]  # the served route
    dtypes: tuple[str, ...]  # compute dtype of each hop
    threads: int = 1  # torch threads while the replica generates
    codec: str = "int8-outlier"  # codec at every cut
    device: str = "cpu"  # where the replica's hops run


def honest_mixes(device: str | None = None) -> list[Mix]:
    """The honest variations this study runs; ``device`` (e.g. "cuda") adds replicas on it."""
    out = [Mix("fp32-3hop", "fp32", THREE, ("fp32",) * 3),
           Mix("fp32-2threads-2hop", "fp32", ((0, 15), (15, 30)), ("fp32",) * 2, threads=2),
           Mix("fp32-cuts-7-19", "fp32", ((0, 7), (7, 19), (19, 30)), ("fp32",) * 3),
           Mix("fp32-fp32codec", "fp32", THREE, ("fp32",) * 3, codec="fp32"),
           Mix("bf16-3hop", "bf16", THREE, ("bf16",) * 3),
           Mix("bf16-fp32-2hop", "bf16", ((0, 15), (15, 30)), ("bf16", "fp32"))]
    if device and device != "cpu":
        out += [Mix(f"fp32-{device}-3hop", "fp32", THREE, ("fp32",) * 3, device=device),
                Mix(f"bf16-{device}-3hop", "bf16", THREE, ("bf16",) * 3, device=device)]
    return out


def select_mixes(mixes: Sequence[Mix], names: str | None) -> list[Mix]:
    """The mixes named in the comma list ``names``, in ``mixes``' order; all when ``names`` is empty."""
    if not names:
        return list(mixes)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {m.name for m in mixes}
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown mix {', '.join(unknown) or repr(names)}; the mixes here are {', '.join(sorted(known))} "
                         "(--device cuda adds the cuda ones)")
    return [m for m in mixes if m.name in wanted]


def node(i: int) -> NodeId:
    return NodeId(Account.from_key(bench_key(i)).address)


class Lab:
    """Hops loaded once per (span, dtype, device); one fp32 verifier on the CPU."""

    def __init__(self, model_dir: Path, verifier_threads: int = 1):
        self.model_dir, self.verifier_threads = model_dir, verifier_threads
        torch.set_num_threads(verifier_threads)
        self.verifier = Verifier(model_dir)
        self._hops: dict[tuple, LocalHop] = {}

    def hop(self, i: int, start: int, end: int, dtype: str = "fp32", device: str = "cpu") -> LocalHop:
        key = (i, start, end, dtype, device)
        if key not in self._hops:
            self._hops[key] = load_hop(self.model_dir, node(i), start, end, dtype=dtype, device=device)
        return self._hops[key]

    def hops(self, mix: Mix) -> list[LocalHop]:
        return [self.hop(i, a, b, d, mix.device) for i, ((a, b), d) in enumerate(zip(mix.spans, mix.dtypes))]

    def run(self, hops: Sequence[LocalHop], spec: ExecSpec, prompt: Sequence[int], tol: Tolerance, *,
            threads: int = 1, job: int = 1, gen_prompt: Sequence[int] | None = None,
            gen_params: GenParams | None = None) -> tuple[dict, tuple[int, ...]]:
        """Generate (with ``gen_prompt``/``gen_params`` where a tamper changes them), verify against
        ``prompt``/``spec``; return the run's record and its output."""
        torch.set_num_threads(threads)
        try:
            out = run_replica(hops, gen_params or spec.params, gen_prompt or prompt, JobId(job))
        finally:
            torch.set_num_threads(self.verifier_threads)
        route = [Hop(h.node, h.start, h.end) for h in hops]
        rep = self.verifier.verify(spec, prompt, out.tokens, route, out.receipts, job, 0, tol)
        return record(rep, out.seconds, len(out.tokens)), out.tokens


def record(rep: Report, gen_s: float, tokens: int) -> dict:
    """One run as JSON-ready data: the verdict and the measurements it came from."""
    v = rep.verdict
    return {"verdict": v.status, "hop": v.hop, "reason": v.reason, "tokens": tokens,
            "gen_s": round(gen_s, 4), "verify_s": round(rep.seconds, 4),
            "chunks": [[[float(f"{c.median:.3g}"), float(f"{c.p90:.3g}")] for c in hop] for hop in rep.chunks],
            "gaps": [[t, float(f"{g:.4g}")] for t, g in enumerate(rep.token_gaps) if g > 0]}


def spec_for(mix_cls: str, codec_name: str, tokens: int, temperature_milli: int, seed: int) -> ExecSpec:
    return ExecSpec(GenParams(max_tokens=tokens, temperature_milli=temperature_milli, seed=seed,
                              codec=codec.codec_id(codec_name), block=64), dtype=mix_cls)


def with_alter(hops: Sequence[LocalHop], at: int, hop: LocalHop) -> list[LocalHop]:
    """``hops`` with hop ``at`` replaced (the tampered one keeps the honest hop's node and span)."""
    out = list(hops)
    out[at] = replace(hop, node=hops[at].node, start=hops[at].start, end=hops[at].end)
    return out
