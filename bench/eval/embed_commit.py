"""How often honest replicas of an embedding job commit different outputs (all-MiniLM-L6-v2).

An embedding job's output is its embedding on a grid (``proto.types.embedding_words``:
``round(256 * v)`` per value), so two replicas agree when every value rounds the
same way. Replica A is fp32 through the sharded stages with fp32 activations and
2 threads; each mix changes one honest thing about replica B, run through the
same stage code a worker runs (``load_stage``, the activation codec between
stages as on the wire):

* ``1 thread``;
* ``fp32 cut(s) at``: other cut points (2 and 3 stages), fp32 activations;
* ``bf16 weights``: stages in bfloat16;
* ``<codec>@<cuts>``: each activation codec at 1 cut (after block 3) and at 5
  cuts (after every block);
* ``int8-outlier@2 vs @4``: two lossy replicas cut at different points.

Per mix and grid (64 to 4096 steps per unit, 256 being the protocol's): the
share of texts whose words differ; and at the protocol's grid the mean number
of differing dimensions, and the largest value difference before rounding.

    python -m bench.eval.embed_commit --json [--texts 100] [--save bench/results/embed-commit-cpu.json]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch

from bench._out import emit
from bench.eval.prompts import english_prompts
from proto.types import EMBEDDING_GRID
from worker import codec, store
from worker.node.payload import head_inputs
from worker.shard import load_stage

GRIDS = (64, 256, 1024, 4096)  # steps per unit; EMBEDDING_GRID is the protocol's


@dataclass(frozen=True)
class Replica:
    """How one honest replica runs: its stages, dtype, activation codec and threads."""

    spans: tuple[tuple[int, int], ...] = ((0, 6),)
    dtype: torch.dtype = torch.float32
    codec: str = "fp32"
    threads: int = 2

    def label(self) -> str:
        cuts = ",".join(str(b) for _, b in self.spans[:-1]) or "none"
        return f"{self.codec} cuts {cuts}, {str(self.dtype).removeprefix('torch.')}, {self.threads} thread(s)"


def run(model_dir, rep: Replica, texts: list[list[int]]) -> torch.Tensor:
    """``(N, C)`` float32 embeddings of ``texts`` (token ids) through ``rep``'s stages, one text a job."""
    torch.set_num_threads(rep.threads)
    stages = [load_stage(model_dir, a, b, dtype=rep.dtype) for a, b in rep.spans]
    cid = codec.codec_id(rep.codec)
    out = []
    for ids in texts:
        x = torch.tensor([ids])
        for i, s in enumerate(stages):
            x = s(x)
            if i + 1 < len(stages):
                x = codec.decode(codec.encode(x, cid, 64)).to(rep.dtype)
        out.append(x[0].float())
    return torch.stack(out)


def words(e: torch.Tensor, grid: int) -> torch.Tensor:
    """Grid values ``floor(v * grid + 0.5)`` as proto.types.embedding_words computes them (float64 exact)."""
    return torch.floor(e.double() * grid + 0.5).long()


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Disagreement of two replicas' embeddings ``(N, C)`` per grid (pure)."""
    differ = {str(g): round(float((words(a, g) != words(b, g)).any(1).double().mean()), 4) for g in GRIDS}
    dims = (words(a, EMBEDDING_GRID) != words(b, EMBEDDING_GRID)).sum(1).double()
    return {"disagree": differ, "dims_differ_mean": round(float(dims.mean()), 3),
            "max_abs_diff": float((a - b).abs().max()),
            "cosine_min": round(float(torch.nn.functional.cosine_similarity(a, b).min()), 9)}


def mixes() -> list[tuple[str, Replica, Replica]]:
    ref = Replica()
    out = [("1 thread", ref, Replica(threads=1)),
           ("fp32 cut at 3", ref, Replica(spans=((0, 3), (3, 6)))),
           ("fp32 cuts at 2, 4", ref, Replica(spans=((0, 2), (2, 4), (4, 6)))),
           ("bf16 weights", ref, Replica(dtype=torch.bfloat16))]
    for name in ("fp16", "bf16", "int8-absmax", "int8-outlier", "int8-dynamic"):
        out.append((f"{name}@3", ref, Replica(spans=((0, 3), (3, 6)), codec=name)))
        out.append((f"{name}@all", ref, Replica(spans=tuple((i, i + 1) for i in range(6)), codec=name)))
    out.append(("int8-outlier@2 vs @4", Replica(spans=((0, 2), (2, 6)), codec="int8-outlier"),
                Replica(spans=((0, 4), (4, 6)), codec="int8-outlier")))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eval.embed_commit", description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=100, help="English sentences, one embedding job each")
    ap.add_argument("--words", type=int, default=12, help="words per sentence")
    ap.add_argument("--save")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    d = store.fetch("minilm-l6").directory
    texts = [head_inputs("embedding", d, t.encode()) for t in english_prompts(args.texts, args.words)]
    cache: dict[Replica, torch.Tensor] = {}

    def emb(rep: Replica) -> torch.Tensor:
        if rep not in cache:
            cache[rep] = run(d, rep, texts)
        return cache[rep]

    rows = []
    for name, a, b in mixes():
        rows.append({"mix": name, "a": a.label(), "b": b.label(), **compare(emb(a), emb(b))})
        print(f"{name}: {rows[-1]['disagree']}", file=sys.stderr)
    boundary = 0.5 / EMBEDDING_GRID
    result = {"bench": "embed_commit", "model": "all-MiniLM-L6-v2", "texts": args.texts, "words": args.words,
              "dims": int(emb(Replica()).shape[1]), "grid": EMBEDDING_GRID, "grids": list(GRIDS),
              "rounding_error_max": boundary, "rows": rows,
              "note": "a text disagrees when any of its words differs; B's words are A's unless a value moved across "
                      f"a rounding boundary (every {1 / EMBEDDING_GRID:g} at the protocol's grid)"}
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    sys.exit(main())
