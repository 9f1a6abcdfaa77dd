"""The int8 outlier file stored beside a causal LM's weights: which input features of each
block Linear stay in 16 bits.

Every node quantizes its blocks with the same indices, chosen once when the model is stored
(:mod:`worker.store.calibrate`). Keys are ``"{block}/{path in block}"``, e.g.
``"3/self_attn.q_proj"``.
"""

from __future__ import annotations

import json
from pathlib import Path

OUTLIERS_FILE = "int8_outliers.json"


def block_key(block: int, path: str) -> str:
    return f"{block}/{path}"


def read_outliers(model_dir: Path) -> dict[str, list[int]] | None:
    path = Path(model_dir) / OUTLIERS_FILE
    return json.loads(path.read_text())["layers"] if path.is_file() else None
