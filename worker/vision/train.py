"""Reproducible training of the digits classifiers (``python -m worker.vision.train NAME OUT``).

Fixed seed, one CPU thread while training, full-data Adam epochs over a
shuffled order drawn from a seeded generator: the same machine gives the same
weights on every run. ``tessera model fetch digits-cnn`` / ``digits-vit`` call
:func:`train_and_save` and store the result like any other model.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from worker.vision.data import TEST_SIZE, digits_test_split, digits_train_split
from worker.vision.models import DigitsCNN, DigitsViT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    arch: str
    arch_kwargs: dict = field(default_factory=dict)
    epochs: int = 30  # passes over the 1,437 training images
    batch: int = 64  # images per step
    lr: float = 3e-3  # Adam learning rate, cosine-decayed to 0
    weight_decay: float = 1e-4
    seed: int = 0


RECIPES = {
    "digits-cnn": Recipe("digits-cnn", {"width": 32}, epochs=20, lr=3e-3),
    "digits-vit": Recipe("digits-vit", {"dim": 64, "depth": 4, "heads": 4, "patch": 2}, epochs=60, lr=2e-3),
}
FACTORIES = {"digits-cnn": DigitsCNN, "digits-vit": DigitsViT}


@contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(x).argmax(-1) == y).float().mean())


def train(recipe: Recipe) -> tuple[torch.nn.Module, float]:
    """Train one model; return it (eval mode) and its test-split accuracy."""
    with _one_thread():
        torch.manual_seed(recipe.seed)
        model = FACTORIES[recipe.arch](**recipe.arch_kwargs)
        x, y = digits_train_split()
        gen = torch.Generator().manual_seed(recipe.seed)
        steps = recipe.epochs * ((len(x) + recipe.batch - 1) // recipe.batch)
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        model.train()
        for _ in range(recipe.epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), recipe.batch):
                idx = perm[i:i + recipe.batch]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        model.eval()
        xt, yt = digits_test_split()
        return model, accuracy(model, xt, yt)


def train_and_save(arch: str, out: Path) -> str:
    """Train ``arch`` and write ``config.json`` + ``model.safetensors`` into ``out``; return a source line."""
    recipe = RECIPES[arch]
    t0 = time.time()
    model, acc = train(recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    factory = FACTORIES[arch]
    config = {"tessera_arch": arch, "tessera_builder": f"{factory.__module__}:{factory.__qualname__}",
              "arch_kwargs": recipe.arch_kwargs, "tessera_blocks": "blocks",
              "tessera_kind": "classifier", "num_labels": 10, "input": "digits-8x8-uint8",
              "training": {**asdict(recipe), "test_size": TEST_SIZE, "test_accuracy": round(acc, 4)}}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    logger.info("trained %s in %.1f s: test accuracy %.4f", arch, time.time() - t0, acc)
    return f"trained by worker.vision.train (seed {recipe.seed}); test accuracy {acc:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch", choices=sorted(RECIPES))
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    print(train_and_save(args.arch, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
