"""Which checkpoint tensors belong to which stage of a model.

A model is ``input stage -> blocks 0..N-1 -> output stage``. The layout maps
every stage to the checkpoint keys it needs, each under a *logical name*
relative to its owner (``embed_tokens.weight``, ``self_attn.q_proj.weight``,
``norm.weight``, ``lm_head.weight``), so that hashing and loading agree on
exactly the same bytes.

For a Hugging Face causal LM the stages come from the model's own structure
(:mod:`worker.shard.skeleton`): block ``i`` is every tensor of decoder layer
``i``; the input stage the weighted modules that run before the first layer;
the output stage those that run after the last (final norm, head). Logical
names are checkpoint keys with the decoder's prefix (``model.``,
``transformer.``...) or the layer's (``model.layers.3.``) removed. An fx model
is described by ``tessera_arch`` in ``config.json`` (:mod:`worker.shard.fx`).

With tied embeddings (no head weight in the checkpoint) the output stage
reads the embedding matrix under the head's logical name (``lm_head.weight``):
the tail needs those bytes and the commitment covers them.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from proto.errors import ModelError
from worker.shard.skeleton import Skeleton

logger = logging.getLogger(__name__)

Entry = tuple[str, str]  # (logical name, checkpoint key)


@dataclass(frozen=True)
class StageLayout:
    family: str  # config.model_type of a Hugging Face causal LM, or "fx"
    model_type: str  # config.model_type or tessera_arch
    input: tuple[Entry, ...]
    blocks: tuple[tuple[Entry, ...], ...]
    output: tuple[Entry, ...]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def span_entries(self, start: int, end: int) -> dict[str, tuple[Entry, ...]]:
        """Entries of the stages a node serving ``[start, end)`` runs, by stage name."""
        out: dict[str, tuple[Entry, ...]] = {}
        if start == 0:
            out["input"] = self.input
        for i in range(start, end):
            out[f"block.{i}"] = self.blocks[i]
        if end == self.num_blocks:
            out["output"] = self.output
        return out


def read_config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelError(f"{model_dir} has no config.json; is it a model directory? "
                         "Use `tessera model import DIR` on a Hugging Face model directory.")
    return json.loads(path.read_text())


def is_fx(config: dict) -> bool:
    """A tessera fx model (any PyTorch model named by ``tessera_arch``) rather than a Hugging Face one."""
    return "tessera_arch" in config


def relative(key: str, path: str) -> str:
    """``key`` without the longest tail of ``path`` it starts with ("model.decoder.x" -> "x", "decoder.x" -> "x")."""
    parts = path.split(".") if path else []
    for i in range(len(parts)):
        prefix = ".".join(parts[i:]) + "."
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def hf_layout(skel: Skeleton, model_type: str, keys: list[str]) -> StageLayout:
    """Layout of a Hugging Face causal-LM checkpoint with tensors ``keys``."""
    n = skel.num_layers
    leaf = skel.layers_path.rpartition(".")[2]
    to_model = skel.model_keys(keys)
    from_model = {mk: k for k, mk in to_model.items() if mk is not None}
    tied = getattr(skel.model, "all_tied_weights_keys", None) or {}
    head_keys = skel.head_keys
    # a tied head is the tensor it is tied to, as transformers loads it (even if the checkpoint also has its own)
    head_source = {hk: from_model[tied[hk]] for hk in head_keys if tied.get(hk) in from_model}
    inp: list[Entry] = []
    blocks: list[list[Entry]] = [[] for _ in range(n)]
    outp: list[Entry] = [(relative(hk, skel.decoder_path), k) for hk, k in head_source.items()]
    for k in sorted(keys):
        mk = to_model[k]
        block = None if mk is None else skel.block_of(mk)
        side = None if mk is None or mk in head_source else skel.side_of(mk)
        if block is not None:
            m = re.search(rf"(?:^|\.){re.escape(leaf)}\.{block}\.", k)
            blocks[block].append((k[m.end():] if m else mk[len(skel.layers_path) + len(str(block)) + 2:], k))
        elif side == "input":
            inp.append((relative(k, skel.decoder_path), k))
        elif side == "output":
            outp.append((relative(k, skel.decoder_path), k))
        else:
            logger.warning("checkpoint tensor %s belongs to no stage; ignored", k)
    missing = [hk for hk in head_keys if hk not in head_source and hk not in from_model]
    if missing:
        raise ModelError(f"checkpoint has no {missing[0]} and no tensor it is tied to; the model directory is "
                         "incomplete")
    if any(not b for b in blocks):
        missing_blocks = [i for i, b in enumerate(blocks) if not b]
        raise ModelError(f"checkpoint lacks the weights of blocks {missing_blocks}; the model directory is incomplete")
    return StageLayout(model_type, model_type, tuple(inp), tuple(tuple(b) for b in blocks), tuple(sorted(outp)))
