"""Verification by re-execution: teacher-forced passes (fp32; bf16 and fp16 jobs also their dtype) judge a replica.

The verifier runs the prompt and the revealed output (all but its last token)
through the model in one prefill, cut at the replica's served route. At each
cut it puts the hidden states through the job's codec exactly as the ring did
(the prompt rows in one tensor, then each decode step's row alone), so the
next span sees what that hop received, up to floating-point noise. It keeps
every served hop's output and the tail's logits at each step, then:

1. checks each hop's receipt chunk by chunk (:func:`worker.verify.fingerprint.compare`);
   the first hop with a chunk beyond its tolerance, and beyond what the error
   of the input it was handed can grow into (:class:`Tolerance`), is faulty;
2. if every fingerprint passes, checks each emitted token against the
   verifier's own choice: a different token is honest only where the
   verifier's logits put it within ``token_gap`` of the top (sampled jobs: the
   uniform within ``cdf_slack`` of its interval); otherwise the tail is faulty.

A job of a reduced-precision class (bf16, fp16) may compute in that dtype, and that
dtype now and then moves a logit by whole units where fp32 does not (SmolLM2 after a
lone space: 23.9 in bf16 against 4.6 in fp32). So a replica of such a job that the
fp32 pass finds faulty is judged again with a second pass in the class's own dtype:
each chunk and each token is held against whichever pass is closer, so a replica is
faulty only where neither an fp32 nor a bf16 computation explains it (the second
pass runs only then).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from proto.types import Hop, encode_output, output_hash
from worker import codec
from worker.sampling import uniform
from worker.shard import load_stage, stage_layout
from worker.verify.fingerprint import ChunkCheck, chunk_of, chunk_seed, chunk_steps, compare, num_chunks
from worker.verify.receipt import HopReceipt
from worker.verify.spec import TOLERANCES, ExecSpec, Tolerance, Verdict, VerifyError, tolerance_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """A verdict and the measurements behind it (what calibration and the benchmark read)."""

    verdict: Verdict
    chunks: tuple[tuple[ChunkCheck, ...], ...]  # per served hop, per chunk
    token_gaps: tuple[float, ...]  # per step: 0 where the verifier chose the emitted token, else its gap
    seconds: float  # wall time of the verification


class Verifier:
    """The whole model as one fp32 stage per block, so any route's cuts can be reproduced."""

    def __init__(self, model_dir: Path | str, weights: str = "fp32", device: str = "cpu"):
        n = stage_layout(model_dir).num_blocks
        self.model_dir, self.device, self.weights, self.num_blocks = model_dir, device, weights, n
        self.blocks = [load_stage(model_dir, i, i + 1, device, torch.float32, weights) for i in range(n)]
        self._low: dict[str, list] = {}  # the same blocks in a reduced-precision class's dtype, loaded on first need
        head = getattr(getattr(self.blocks[-1], "model", None), "lm_head", None)
        self.vocab = head.out_features if isinstance(head, torch.nn.Linear) else None  # None: not checked up front
        if self.blocks[0].spec.kind != "causal-lm":
            raise VerifyError(f"re-execution verifies language models; {model_dir} is a {self.blocks[0].spec.kind}")

    def outputs(self, spec: ExecSpec, prompt: Sequence[int], output: Sequence[int],
                spans: Sequence[tuple[int, int]],
                blocks: Sequence | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Teacher-forced pass over ``spans`` (with ``blocks``, by default the fp32 ones): each non-tail
        hop's output ``(T, C)`` and the tail's logits ``(N, V)`` (row ``t`` decides output token ``t``),
        as float32 arrays."""
        blocks = self.blocks if blocks is None else blocks
        p, cuts = len(prompt), []
        ids = torch.tensor([list(prompt) + list(output[:-1])], device=blocks[0].device)
        h: torch.Tensor = ids
        with torch.inference_mode():
            for i, (a, b) in enumerate(spans):
                if i > 0:
                    h = self._wire(h, p, spec)
                for blk in range(a, b - 1 if i == len(spans) - 1 else b):
                    h = blocks[blk].forward(h)
                if i < len(spans) - 1:
                    cuts.append(h[0].float().cpu().numpy())
            logits = _tail_logits(blocks[spans[-1][1] - 1], h, p - 1)
        return cuts, logits[0].float().cpu().numpy()

    def _measure(self, spec, prompt, output, spans, receipts, job_id, replica, blocks):
        """Every hop's chunk checks and every step's token gap against one teacher-forced pass."""
        cuts, logits = self.outputs(spec, prompt, output, spans, blocks)
        steps, tail = len(output), len(spans) - 1
        checks = []
        for i, rec in enumerate(receipts):
            y = logits if i == tail else cuts[i]
            checks.append(tuple(compare(fp, _chunk_rows(y, c, steps, len(prompt), i == tail),
                                        chunk_seed(job_id, replica, i, c, _chunk_tokens(output, c)))
                                for c, fp in enumerate(rec.chunks)))
        gaps = tuple(_token_gap(logits[t], output[t], spec, t) for t in range(steps))
        return tuple(checks), gaps, tuple(np.sqrt(np.mean(np.square(logits.astype(np.float64)), axis=1)).tolist())

    def low_blocks(self, dtype: str) -> list:
        """The model in ``dtype`` ("bf16" or "fp16"), one stage per block, loaded once."""
        if dtype not in self._low:
            dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
            self._low[dtype] = [load_stage(self.model_dir, i, i + 1, self.device, dt, self.weights)
                                for i in range(self.num_blocks)]
        return self._low[dtype]

    def _wire(self, h: torch.Tensor, prompt_len: int, spec: ExecSpec) -> torch.Tensor:
        """What the next hop decoded: the prompt rows as one tensor, then each step's row alone."""
        c, block = spec.params.codec, spec.params.block
        if c == codec.FP32:
            return h  # lossless: decode(encode(h)) == h bit for bit
        parts = [h[:, :prompt_len]] + [h[:, r : r + 1] for r in range(prompt_len, h.shape[1])]
        return torch.cat([codec.decode(codec.encode(x, c, block)) for x in parts], dim=1).to(h.device)

    def verify(self, spec: ExecSpec, prompt: Sequence[int], output: Sequence[int] | None, route: Sequence[Hop],
               receipts: Sequence[HopReceipt], job_id: int, replica: int, tol: Tolerance | None = None) -> Report:
        """Judge one replica (``output`` None: it revealed nothing, so the verdict is unknown) with ``tol``,
        by default the calibrated :data:`TOLERANCES` of the job's dtype class and codec."""
        t0 = time.perf_counter()
        tol = TOLERANCES[tolerance_key(spec)] if tol is None else tol
        if spec.weights != self.weights:
            raise VerifyError(f"job runs {spec.weights} weights but this verifier loaded {self.weights}")
        if output is None:
            return Report(Verdict("unknown", reason="the replica revealed no output"), (), (), 0.0)
        _check_route(route, self.num_blocks)
        if not prompt:
            raise VerifyError("the job's prompt is empty")
        bad = _structure(spec, output, route, receipts, job_id, replica, self.vocab)
        if bad is not None:
            return Report(bad, (), (), time.perf_counter() - t0)
        spans = [(h.start, h.end) for h in route]
        checks, gaps, scale = self._measure(spec, prompt, output, spans, receipts, job_id, replica, None)
        verdict = judge(checks, gaps, output, tol, scale)
        if verdict.status == "faulty" and spec.dtype != "fp32":  # the class's own dtype may explain it
            low = self._measure(spec, prompt, output, spans, receipts, job_id, replica, self.low_blocks(spec.dtype))
            checks = tuple(tuple(map(_closer, a, b)) for a, b in zip(checks, low[0]))
            gaps = tuple(map(min, gaps, low[1]))
            verdict = judge(checks, gaps, output, tol, scale)
        return Report(verdict, tuple(checks), gaps, time.perf_counter() - t0)


def _closer(a: ChunkCheck, b: ChunkCheck) -> ChunkCheck:
    return a if (a.median, a.p90) <= (b.median, b.p90) else b


def judge(checks: Sequence[Sequence[ChunkCheck]], gaps: Sequence[float], output: Sequence[int],
          tol: Tolerance, scale: Sequence[float] | None = None) -> Verdict:
    """The verdict from the measurements (pure): the first hop whose chunk error exceeds both the
    tolerance and what its input's error can grow into; else the tail if a token is off; else honest.

    A token is off when its gap exceeds ``tol.token_gap`` plus what the tail's own logits, measured
    off by the p90 of their chunk's fingerprint (at most ``tol.fp_p90``) times the row's RMS
    (``scale``, the verifier's logits), can move two logits apart: a tail handed an input that
    passed upstream, but not bit for bit, flips near-ties that wide and is not to blame for them
    (the deviation it was handed is the upstream hops' and passed their checks)."""
    prev: Sequence[ChunkCheck] | None = None
    for i, hop in enumerate(checks):
        for c, k in enumerate(hop):
            m, q = tol.fp_median, tol.fp_p90
            if prev is not None and c < len(prev):
                m, q = max(m, tol.growth * prev[c].median), max(q, tol.growth * prev[c].p90)
            if not k.within(m, q):
                return Verdict("faulty", i, f"hop {i} chunk {c}: fingerprint off by median {k.median:.3g} / "
                                            f"p90 {k.p90:.3g} row RMS (allowed {m:.3g} / {q:.3g})")
        prev = hop
    tail = checks[-1] if checks else ()
    allowed = [tol.token_gap + (2 * min(tail[chunk_of(t)].p90, tol.fp_p90) * scale[t]
                                if scale is not None and chunk_of(t) < len(tail) else 0.0) for t in range(len(gaps))]
    over = [t for t in range(len(gaps)) if gaps[t] > allowed[t]]
    if over:
        t = max(over, key=lambda j: gaps[j] - allowed[j])
        return Verdict("faulty", len(checks) - 1, f"step {t}: token {output[t]} is {gaps[t]:.3g} logits below "
                                                  f"the verifier's choice (tolerance {allowed[t]:.3g})")
    return Verdict("honest", reason="every fingerprint and token within tolerance")


def _check_route(route: Sequence[Hop], num_blocks: int) -> None:
    at = 0
    for h in route:
        if h.start != at or h.end <= h.start:
            raise VerifyError(f"route is not a chain of spans covering [0, {num_blocks}): hop [{h.start}, {h.end}) "
                              f"where block {at} comes next")
        at = h.end
    if at != num_blocks:
        raise VerifyError(f"route stops at block {at} of {num_blocks}")


def _structure(spec: ExecSpec, output: Sequence[int], route: Sequence[Hop], receipts: Sequence[HopReceipt],
               job_id: int, replica: int, vocab: int | None) -> Verdict | None:
    """A faulty verdict for what is wrong before any compute (malformed receipts, wrong length), else None."""
    tail, p = len(route) - 1, spec.params
    if len(receipts) != len(route):
        return Verdict("faulty", tail, f"the tail holds {len(receipts)} receipts for {len(route)} served hops")
    for i, (h, r) in enumerate(zip(route, receipts)):
        if (int(r.job_id), r.replica, r.hop, r.node.lower(), r.start, r.end) != (
                job_id, replica, i, h.node.lower(), h.start, h.end):
            return Verdict("faulty", i, f"hop {i}'s receipt names another job, position, node or span")
        if len(r.chunks) != num_chunks(len(output)):
            return Verdict("faulty", i, f"hop {i}'s receipt has {len(r.chunks)} chunks for {len(output)} steps")
    revealed = output_hash(encode_output(output))
    if receipts[tail].output_hash != revealed:
        return Verdict("faulty", tail, "the tail revealed another output than its own receipt names")
    others = [i for i, r in enumerate(receipts) if r.output_hash != revealed]
    if others:  # the tail's signed answers, which these hops hold, say who changed the ids (not judged here)
        return Verdict("unknown", reason=f"hops {others} were sent another output than the tail revealed")
    n, eos = len(output), set(p.eos_token_ids)
    if vocab is not None and any(not 0 <= t < vocab for t in output):
        return Verdict("faulty", tail, f"output holds a token id outside the vocabulary of {vocab}")
    if not 1 <= n <= p.max_tokens:
        return Verdict("faulty", tail, f"output has {n} tokens; the job asks for 1..{p.max_tokens}")
    if any(t in eos for t in output[:-1]):
        return Verdict("faulty", tail, f"output continues after an end token {sorted(eos)}")
    if n < p.max_tokens and output[-1] not in eos:
        return Verdict("faulty", tail, f"output stops at {n} of {p.max_tokens} tokens without the end token")
    return None


def _chunk_rows(y: np.ndarray, chunk: int, steps: int, prompt_len: int, tail: bool) -> np.ndarray:
    """The rows of ``y`` a hop computed in ``chunk`` (a tail's ``y`` holds one logits row per step)."""
    r = chunk_steps(chunk, steps)
    if tail:
        return y[r.start : r.stop]
    if chunk == 0:
        return y[:prompt_len]
    return y[prompt_len + r.start - 1 : prompt_len + r.stop - 1]


def _chunk_tokens(output: Sequence[int], chunk: int) -> Sequence[int]:
    r = chunk_steps(chunk, len(output))
    return output[r.start : r.stop]


def _token_gap(z: np.ndarray, tok: int, spec: ExecSpec, step: int) -> float:
    """0 if the verifier picks ``tok`` here; else how far off it is, in logits (sampled: the CDF
    distance of the uniform from ``tok``'s interval, mapped back through :meth:`Tolerance.cdf_slack`)."""
    p = spec.params
    if not 0 <= tok < z.size:
        return math.inf
    if p.temperature_milli == 0:
        top = int(np.argmax(z))
        return 0.0 if top == tok else float(z[top] - z[tok])
    t = p.temperature_milli / 1000.0
    w = z.astype(np.float64) / t
    w = np.exp(w - w.max())
    cdf = np.cumsum(w / w.sum())
    lo, hi, u = (cdf[tok - 1] if tok else 0.0), cdf[tok], uniform(p.seed, step)
    dist = max(lo - u, u - hi, 0.0)
    if dist == 0.0 or (tok == z.size - 1 and u >= lo):  # the sampler maps u past cdf[-1] to the last token
        return 0.0
    return 2 * t * math.atanh(min(dist, 1 - 1e-12))


def _tail_logits(stage, h: torch.Tensor, first_row: int) -> torch.Tensor:
    """Logits of rows ``first_row`` on."""
    return stage.forward(h)[:, first_row:]
