"""What a model's config says a job may ask of it: context length and the width of its activations."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model")


@dataclass(frozen=True)
class ModelLimits:
    context: int | None = None  # positions the model attends over (prompt + generated); None = unstated
    hidden: int | None = None  # width of a decoder's activations between blocks, values; None = unstated

    @classmethod
    def of(cls, model_dir: str | Path | None) -> "ModelLimits":
        """From ``config.json`` (Hugging Face layout) in ``model_dir``; unstated if there is none."""
        path = Path(model_dir) / "config.json" if model_dir is not None else None
        if path is None or not path.is_file():
            return cls()
        cfg = json.loads(path.read_text())
        return cls(_first_int(cfg, CONTEXT_KEYS), _first_int(cfg, HIDDEN_KEYS))


def _first_int(cfg: dict, keys: tuple[str, ...]) -> int | None:
    return next((cfg[k] for k in keys if isinstance(cfg.get(k), int)), None)
