"""Which checkpoint tensors belong to which stage of a model.

A model is ``input stage -> blocks 0..N-1 -> output stage``. The layout maps
every stage to the checkpoint keys it needs, each under a *logical name*
relative to its owner (``embed_tokens.weight``, ``self_attn.q_proj.weight``,
``norm.weight``, ``lm_head.weight``), so that hashing and loading agree on
exactly the same bytes.

Families:

* ``llama`` (also Qwen2, Mistral configs): ``model.embed_tokens`` |
  ``model.layers.{i}`` | ``model.norm`` + ``lm_head``;
* ``gpt2``: ``transformer.wte`` + ``transformer.wpe`` | ``transformer.h.{i}`` |
  ``transformer.ln_f`` + ``lm_head``;
* ``fx``: any PyTorch model described by ``tessera_arch`` in ``config.json``
  (see :mod:`worker.shard.fx`).

With tied embeddings (no ``lm_head.weight`` in the checkpoint) the output stage
reads the embedding matrix under the logical name ``lm_head.weight``: the tail
needs those bytes and the commitment covers them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from proto.errors import ModelError

logger = logging.getLogger(__name__)

Entry = tuple[str, str]  # (logical name, checkpoint key)


@dataclass(frozen=True)
class Family:
    name: str  # family name written into the manifest
    base_prefix: str  # attribute of the *ForCausalLM holding the base model
    blocks_attr: str  # ModuleList of blocks inside the base model
    input_modules: tuple[str, ...]  # base-model children run by the head
    output_modules: tuple[str, ...]  # base-model children run by the tail
    num_blocks_key: str  # config key holding the number of blocks


LLAMA = Family("llama", "model", "layers", ("embed_tokens",), ("norm",), "num_hidden_layers")
GPT2 = Family("gpt2", "transformer", "h", ("wte", "wpe"), ("ln_f",), "n_layer")

# config.model_type -> family. Qwen2 and Mistral are Llama-style decoders that the
# same code serves (sliding-window layer types are sliced per stage).
FAMILIES: dict[str, Family] = {"llama": LLAMA, "qwen2": LLAMA, "mistral": LLAMA, "gpt2": GPT2}


@dataclass(frozen=True)
class StageLayout:
    family: str  # "llama", "gpt2" or "fx"
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


def family_of(config: dict) -> Family | None:
    """The HF family of a config, None for an fx model; raise for unsupported ones."""
    if "tessera_arch" in config:
        return None
    mt = config.get("model_type", "")
    if mt not in FAMILIES:
        raise ModelError(f"model_type {mt!r} is not supported; supported: "
                         f"{', '.join(sorted(FAMILIES))} and tessera fx models")
    return FAMILIES[mt]


def hf_layout(fam: Family, config: dict, keys: list[str]) -> StageLayout:
    """Layout of a Llama-style or GPT-2 checkpoint (keys with or without the base prefix)."""
    n = int(config[fam.num_blocks_key])
    pfx = fam.base_prefix + "." if any(k.startswith(fam.base_prefix + ".") for k in keys) else ""
    inp: list[Entry] = []
    blocks: list[list[Entry]] = [[] for _ in range(n)]
    outp: list[Entry] = []
    bpfx = f"{pfx}{fam.blocks_attr}."
    for k in sorted(keys):
        if k.startswith(bpfx):
            idx, _, rest = k[len(bpfx):].partition(".")
            if idx.isdigit() and int(idx) < n:
                blocks[int(idx)].append((rest, k))
                continue
        rel = k[len(pfx):] if k.startswith(pfx) else k
        owner = rel.split(".", 1)[0]
        if owner in fam.input_modules:
            inp.append((rel, k))
        elif owner in fam.output_modules or k.startswith("lm_head."):
            outp.append((rel, k))
        else:
            logger.warning("checkpoint tensor %s belongs to no stage; ignored", k)
    if not any(name == "lm_head.weight" for name, _ in outp):
        emb = dict(inp).get(f"{fam.input_modules[0]}.weight")
        if emb is None:
            raise ModelError("checkpoint has neither lm_head.weight nor an input embedding to tie it to")
        outp.append(("lm_head.weight", emb))
    if any(not b for b in blocks):
        missing = [i for i, b in enumerate(blocks) if not b]
        raise ModelError(f"checkpoint lacks the weights of blocks {missing}; the model directory is incomplete")
    return StageLayout(fam.name, config.get("model_type", ""), tuple(inp),
                       tuple(tuple(b) for b in blocks), tuple(sorted(outp)))
