"""Two small classifiers for the 8x8 digits, written to be cut by torch.fx.

Both take raw pixel values ``(B, 1, 8, 8)`` float32 in ``0..16`` (the
scikit-learn scale) and divide by 16 inside their input stage, so the job's
canonical input (64 uint8 pixels) maps to the model input exactly. Each keeps
its blocks in ``self.blocks`` (an ``nn.ModuleList``); everything before the
first block is the input stage, everything after the last the output stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PIXEL_MAX = 16.0  # scikit-learn digits pixel range is 0..16


class DigitsCNN(nn.Module):
    """conv stem | 4 conv blocks (two of them pool 2x) | flatten + linear head."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        w = width
        self.stem = nn.Conv2d(1, w, 3, padding=1)

        def block(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))

        self.blocks = nn.ModuleList([block(w, w, False), block(w, w, True),
                                     block(w, 2 * w, False), block(2 * w, 2 * w, True)])
        self.head = nn.Linear(2 * w * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8)
        x = F.relu(self.stem(x / PIXEL_MAX))  # (B, w, 8, 8)
        for blk in self.blocks:
            x = blk(x)  # ... (B, 2w, 2, 2)
        return self.head(x.flatten(1))  # (B, K)


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_ratio * dim), nn.Linear(mlp_ratio * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, C/H)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, C))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class DigitsViT(nn.Module):
    """2x2 patches (16 tokens) + class token | transformer blocks | norm + linear on the class token."""

    def __init__(self, dim: int = 64, depth: int = 4, heads: int = 4, patch: int = 2, num_classes: int = 10):
        super().__init__()
        n_tok = (8 // patch) ** 2 + 1
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n_tok, dim) * 0.02)
        self.blocks = nn.ModuleList([ViTBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8)
        x = self.patch(x / PIXEL_MAX).flatten(2).transpose(1, 2)  # (B, 16, C)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos  # (B, 17, C)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])  # (B, K)
