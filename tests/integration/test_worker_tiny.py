"""A tiny causal LM split into stages, for worker tests that must not wait on model files.

``load_stage(model_dir, start, end, device, dtype)`` has the signature of
``worker.shard.load_stage``, so ``tessera operator run --plan-file plan.json --loader
tests/integration/test_worker_tiny.py:load_stage`` serves it in a real process.
The stage's "cache" is the history of its inputs (full recompute each step):
slow for big models, exact and simple for this one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from worker.stage import StageSpec

CFG = {"vocab": 97, "dim": 32, "heads": 4, "blocks": 6, "seed": 7}


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):  # (B, T, C)
        T = x.shape[1]
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        h = self.n1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


class TinyLM(nn.Module):
    def __init__(self, cfg=CFG):
        super().__init__()
        torch.manual_seed(cfg["seed"])
        self.emb = nn.Embedding(cfg["vocab"], cfg["dim"])
        self.blocks = nn.ModuleList(Block(cfg["dim"], cfg["heads"]) for _ in range(cfg["blocks"]))
        self.norm, self.head = nn.LayerNorm(cfg["dim"]), nn.Linear(cfg["dim"], cfg["vocab"])

    def forward(self, ids):  # (B, T) -> (B, T, V)
        x = self.emb(ids)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        ids, out = list(prompt), []
        with torch.inference_mode():
            for _ in range(n):
                tok = int(self(torch.tensor([ids]))[0, -1].argmax())
                ids.append(tok)
                out.append(tok)
        return out


class TinyStage:
    """Blocks ``[start, end)`` of a TinyLM; implements worker.stage.Stage."""

    def __init__(self, model: TinyLM, start: int, end: int):
        n = len(model.blocks)
        self.spec = StageSpec("tiny", n, start, end, "causal-lm")
        self.model, self.device, self.dtype = model, torch.device("cpu"), torch.float32

    def new_cache(self):
        return {"x": None}

    def cache_len(self, cache) -> int:
        return 0 if cache["x"] is None else cache["x"].shape[1]

    def cache_bytes(self, cache) -> int:
        return 0 if cache["x"] is None else cache["x"].numel() * cache["x"].element_size()

    def forward(self, x, cache=None, *, last=False):
        cache = cache if cache is not None else self.new_cache()
        new = x.shape[1]
        cache["x"] = x if cache["x"] is None else torch.cat([cache["x"], x], dim=1)
        h = cache["x"]
        if self.spec.is_head:
            h = self.model.emb(h)
        for b in self.model.blocks[self.spec.start : self.spec.end]:
            h = b(h)
        if self.spec.is_tail:
            h = self.model.head(self.model.norm(h))
        return h[:, -1:] if last and self.spec.is_tail else h[:, -new:]


def save(model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "tiny.json").write_text(json.dumps(CFG))
    return model_dir


def load_stage(model_dir, start, end=None, device="cpu", dtype=torch.float32) -> TinyStage:
    cfg = json.loads((Path(model_dir) / "tiny.json").read_text())
    model = TinyLM(cfg).eval()
    return TinyStage(model, start, cfg["blocks"] if end is None else end)


def test_tiny_stages_reproduce_the_whole_model(tmp_path):
    model = TinyLM().eval()
    stages = [TinyStage(model, a, b) for a, b in [(0, 2), (2, 5), (5, 6)]]
    caches = [s.new_cache() for s in stages]
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.inference_mode():
        h = ids
        for s, c in zip(stages, caches):
            h = s.forward(h, c)
        torch.testing.assert_close(h, model(ids))
