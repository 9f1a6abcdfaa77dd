"""Int8 Linear weights with a mixed decomposition (LLM.int8-style), on CPU and GPU.

A weight ``W (out, in)`` is split by input feature: the few *outlier*
features keep their columns in 16 bits (float16), the rest are stored as int8
with one absmax scale per output row, computed without the outliers so that a
handful of huge columns do not blow up the step size of every row::

    y = (x[..., normal] @ q.T) * scale + x[..., outlier] @ W16.T + b

Outlier features are chosen from calibration activations when given
(``max |x_j| >= 6``, the LLM.int8 threshold) or otherwise from the weights
(column absmax >= ``weight_ratio`` x the median column absmax), capped at
``max_frac`` of the features. The choice is a pure function of the weights
(and calibration), so every node quantizing the same committed weights gets
the same int8 model. The matmul runs in the input's dtype after a per-call
cast of the int8 body, which keeps it portable (no int8 GEMM kernel needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ACT_THRESHOLD = 6.0  # |activation| that makes an input feature an outlier (LLM.int8)
WEIGHT_RATIO = 4.0  # column absmax / median column absmax that makes a feature an outlier
MAX_FRAC = 1 / 32  # at most this share of input features stays in 16 bits


@dataclass(frozen=True)
class QuantConfig:
    act_threshold: float = ACT_THRESHOLD
    weight_ratio: float = WEIGHT_RATIO
    max_frac: float = MAX_FRAC
    outlier_dtype: torch.dtype = torch.float16  # storage of the outlier columns


def select_outliers(weight: torch.Tensor, act_absmax: torch.Tensor | None = None,
                    cfg: QuantConfig = QuantConfig()) -> torch.Tensor:
    """Sorted indices of the input features kept in 16 bits."""
    w = weight.detach().float()
    if act_absmax is not None:
        score = act_absmax.detach().float().to(w.device)
        cand = score >= cfg.act_threshold
    else:
        score = w.abs().amax(dim=0)  # (in,)
        cand = score >= cfg.weight_ratio * score.median().clamp_min(1e-12)
    k = min(int(cand.sum()), max(1, int(cfg.max_frac * w.shape[1])) if cfg.max_frac > 0 else 0)
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=w.device)
    top = torch.topk(torch.where(cand, score, torch.full_like(score, -1.0)), k).indices
    return torch.sort(top).values


class Int8MixedLinear(nn.Module):
    """Drop-in replacement of ``nn.Linear`` holding int8 + 16-bit outlier columns."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, outliers: torch.Tensor,
                 cfg: QuantConfig = QuantConfig()):
        super().__init__()
        w = weight.detach().float()  # (out, in)
        self.out_features, self.in_features = w.shape
        keep = torch.ones(self.in_features, dtype=torch.bool, device=w.device)
        keep[outliers] = False
        body = w[:, keep]  # (out, in - k)
        scale = body.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (out,)
        self.register_buffer("q", torch.round(body / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("normal_idx", keep.nonzero().squeeze(1))
        self.register_buffer("outlier_idx", outliers.to(torch.long))
        self.register_buffer("w16", w[:, outliers].to(cfg.outlier_dtype))  # (out, k)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, lin: nn.Module, act_absmax: torch.Tensor | None = None,
                    cfg: QuantConfig = QuantConfig(), outliers: list[int] | None = None) -> "Int8MixedLinear":
        """From ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2, weight stored ``(in, out)``).

        ``outliers``: feature indices chosen beforehand (e.g. stored calibration);
        otherwise chosen from ``act_absmax`` or the weights.
        """
        w = lin.weight if isinstance(lin, nn.Linear) else lin.weight.t()
        idx = (torch.tensor(sorted(outliers), dtype=torch.long, device=w.device) if outliers is not None
               else select_outliers(w, act_absmax, cfg))
        return cls(w, lin.bias, idx, cfg)

    def dequantized(self) -> torch.Tensor:
        """The weight this layer computes with, ``(out, in)`` float32 (for inspection and tests)."""
        w = torch.empty(self.out_features, self.in_features, device=self.q.device)
        w[:, self.normal_idx] = self.q.float() * self.scale[:, None]
        w[:, self.outlier_idx] = self.w16.float()
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        dt = x.dtype
        if self.outlier_idx.numel():
            y = F.linear(x.index_select(-1, self.normal_idx), self.q.to(dt)) * self.scale.to(dt)
            y = y + F.linear(x.index_select(-1, self.outlier_idx), self.w16.to(dt))
        else:
            y = F.linear(x, self.q.to(dt)) * self.scale.to(dt)
        return y if self.bias is None else y + self.bias.to(dt)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, outliers={self.outlier_idx.numel()}"
