"""What a verifier is told about a job, the tolerances it judges with, and what it answers.

A job pins an execution spec: the dtype class the requester paid for, the
weight format, and the generation parameters (codec and block at every cut,
temperature, seed). Honest replicas differ inside a class (threads, kernels,
hardware, bf16 vs fp32 compute in the bf16 class); :class:`Tolerance` holds how
far, per class, as measured by ``tessera bench verify`` on prompts it does not
report on. The verifier always computes in fp32, the reference every class's
tolerance is measured against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from proto.errors import TesseraError
from worker import codec
from worker.planview import GenParams
from worker.shard import WEIGHT_FORMATS

DTYPE_CLASSES = ("fp32", "bf16", "fp16")


class VerifyError(TesseraError):
    """The verifier was given inputs it cannot judge (a spec, route or output out of bounds)."""


@dataclass(frozen=True)
class ExecSpec:
    """How a job must be run: dtype class, weights, and its generation parameters."""

    params: GenParams = field(default_factory=GenParams)
    dtype: str = "fp32"  # dtype class paid for: fp32, bf16 or fp16 (higher precision also passes)
    weights: str = "fp32"  # "fp32" (exact stored weights) or "int8-mixed" (worker.quant, reproducible)

    def __post_init__(self):
        if self.dtype not in DTYPE_CLASSES:
            raise VerifyError(f"dtype class must be one of {DTYPE_CLASSES}, not {self.dtype!r}")
        if self.weights not in WEIGHT_FORMATS:
            raise VerifyError(f"weights must be one of {WEIGHT_FORMATS}, not {self.weights!r}")


@dataclass(frozen=True)
class Tolerance:
    """How far an honest replica of one dtype class may be from the fp32 verifier.

    A hop's chunk passes when its median and 90th-percentile errors are within
    ``fp_median`` / ``fp_p90``, or within ``growth`` times those of the hop
    before it on the same chunk: an int8 codec turns a deviation far below one
    quantization step into whole-step flips on a few values, which the next
    hop spreads over its rows, so a hop is only blamed for deviation its input
    cannot explain.
    """

    fp_median: float  # per chunk: median sample error, in units of the verifier's row RMS
    fp_p90: float  # per chunk: 90th percentile of the same
    growth: float  # how many times a hop's chunk error may exceed the error of the input it was handed
    token_gap: float  # logits: verifier's top logit minus the emitted token's, at a step where they differ

    def cdf_slack(self, temperature_milli: int) -> float:
        """Sampled steps: how far the uniform may sit outside the emitted token's CDF interval.
        Logits within ``token_gap / 2`` of the verifier's move any CDF value by at most tanh(gap / 2T)."""
        return math.tanh(self.token_gap / 2 / (temperature_milli / 1000))


def tolerance_key(spec: ExecSpec) -> str:
    """Which calibration judges a job: its dtype class, and whether its codec is lossless (a lossy
    codec turns the tiniest difference into whole rounding steps now and then: looser tolerances)."""
    return f"{spec.dtype}/{'lossless' if spec.params.codec == codec.FP32 else 'lossy'}"


# Calibrated by `tessera bench verify` (bench/results/verify.json, "calibration") on SmolLM2-135M prompts kept
# apart from those it reports on (bench/eval/verify_cal.py); fp16 and bf16/lossless were not measured and
# take bf16/lossy's values.
TOLERANCES = {
    "fp32/lossy": Tolerance(fp_median=2.2e-3, fp_p90=1.1e-2, growth=188.0, token_gap=1e-2),
    "fp32/lossless": Tolerance(fp_median=5.6e-6, fp_p90=1.5e-5, growth=65.9, token_gap=1e-2),
    "bf16/lossy": Tolerance(fp_median=0.14, fp_p90=0.23, growth=4.0, token_gap=0.64),
}
TOLERANCES.update({k: TOLERANCES["bf16/lossy"] for k in ("bf16/lossless", "fp16/lossy", "fp16/lossless")})


@dataclass(frozen=True)
class Verdict:
    """The verifier's answer for one replica, as ``attest`` encodes it (0 unknown, 1 honest, 2 + hop faulty)."""

    status: str  # "honest", "faulty" or "unknown"
    hop: int | None = None  # faulty: the first faulty served hop (0 = head)
    reason: str = ""  # one line a person can check

    def __post_init__(self):
        if self.status not in ("honest", "faulty", "unknown") or (self.status == "faulty") != (self.hop is not None):
            raise VerifyError(f"inconsistent verdict {self.status!r} with hop {self.hop}")

    @property
    def code(self) -> int:
        return {"unknown": 0, "honest": 1}.get(self.status, 2 + (self.hop or 0))
