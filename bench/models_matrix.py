"""Which model architectures Tessera shards, measured: the support matrix.

For every architecture of :mod:`worker.shard.tiny` (a 4-block model built
from transformers' config class with seeded random weights, no hub):

* import: ``worker.store.import_dir`` (what ``tessera model import`` runs)
  stores it, or refuses it and says why;
* 2-stage / 3-stage exact: greedy decoding through stages in one process, each
  with its own KV cache, gives ``generate``'s token ids, with logits within
  :data:`ATOL` of ``generate``'s at every step;
* multi-process exact: the same token ids from a 3-stage ring whose other
  stages are ``tessera operator run --plan-file`` processes over loopback gRPC
  (fp32 activations).

    python -m bench.models_matrix --json [--save bench/results/models-matrix.json] [--readme README.md]
        [--no-processes] [--only gpt2,opt]

``--readme`` rewrites the table between the ``models-matrix`` markers of the
README's "Supported models" section from the result;
``tests/unit/test_models_matrix.py`` checks that table, the saved result and
the architectures the unit tests cover agree.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from bench._out import emit
from bench._procs import bench_key, even_spans, free_port, ring_route, workers
from proto.errors import ModelError
from worker import codec, store
from worker.planview import GenParams
from worker.ring import run_replica
from worker.shard import load_full, load_stage
from worker.shard.tiny import ARCHITECTURES, BLOCKS, REFUSED, save_tiny_model
from worker.signing import Signer

TOKENS = 24  # greedy tokens per check, past the sliding window of 8 of the windowed configs
PROMPT = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26]  # token ids
ATOL = 1e-5  # largest logit difference from generate's, absolute (fp32 round-off is ~1e-7 here)
START, END = "<!-- models-matrix:start -->", "<!-- models-matrix:end -->"

NOTES = {  # what each tiny config exercises
    "llama": "the SmolLM2 architecture",
    "qwen2": "sliding window 8 on layers 2-3",
    "qwen3": "q/k norms; sliding window 8 on layers 2-3",
    "mistral": "sliding window 8 on every layer",
    "phi3": "fused qkv and gate/up projections",
    "gemma": "embedding scaled by sqrt(hidden)",
    "gemma2": "alternating sliding/global layers, logit soft-capping",
    "gemma3": "sliding/global pattern with per-type rotary embeddings",
    "gpt2": "learned positions, tied head",
    "gpt2-inverse-layer-scaling": "attention scaled by 1/(absolute layer index + 1)",
    "gpt_neox": "parallel residual; checkpoint head `embed_out` renamed on load",
    "opt": "learned positions with offset, project_in/project_out (hidden 64, embeddings 32)",
    "mixtral": "mixture of experts: per-expert checkpoint tensors fused on load; sliding window 8",
    "qwen2_moe": "mixture of experts with a shared expert",
    "qwen3_moe": "mixture of experts, q/k norms",
    "bloom": "ALiBi positions, embedding layer norm, layers return tuples",
    "gptj": "partial rotary, parallel residual, layers return tuples",
}


@contextmanager
def _home(path: Path):
    before = os.environ.get("TESSERA_HOME")
    os.environ["TESSERA_HOME"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TESSERA_HOME")
        else:
            os.environ["TESSERA_HOME"] = before


def reference(model_dir: Path) -> tuple[list[int], torch.Tensor]:
    """``generate``'s greedy token ids after :data:`PROMPT` and its logits per step ``(TOKENS, V)``."""
    full = load_full(model_dir)
    full.generation_config.eos_token_id = None  # exactly TOKENS tokens, none suppressed
    out = full.generate(torch.tensor([PROMPT]), max_new_tokens=TOKENS, do_sample=False, output_logits=True,
                        return_dict_in_generate=True, pad_token_id=0)
    return out.sequences[0, len(PROMPT):].tolist(), torch.cat(out.logits)


@torch.inference_mode()
def in_process(model_dir: Path, parts: int) -> tuple[list[int], torch.Tensor]:
    """Greedy token ids and logits per step through ``parts`` stages, each with its KV cache."""
    stages = [load_stage(model_dir, a, b) for a, b in even_spans(BLOCKS, parts)]
    caches = [s.new_cache() for s in stages]
    x, ids, logits = torch.tensor([PROMPT]), [], []
    for _ in range(TOKENS):
        for s, c in zip(stages, caches):
            x = s(x, c)
        logits.append(x[:, -1])
        x = x[:, -1:].argmax(-1)
        ids.append(int(x))
    return ids, torch.cat(logits)


def multi_process(model_dir: Path, workdir: Path, parts: int = 3) -> list[int]:
    """Greedy token ids from a ring of ``parts`` stages: this process is the head, the others are worker processes."""
    spans = even_spans(BLOCKS, parts)
    ports = [0] + [free_port() for _ in spans[1:]]
    route = ring_route(1, model_dir.name, BLOCKS, spans, ports, GenParams(max_tokens=TOKENS, codec=codec.FP32))
    head = load_stage(model_dir, *spans[0])
    with workers(model_dir, spans, ports, [route], workdir):
        return run_replica(head, route, 0, PROMPT, Signer(bench_key(0)))


def row(arch: str, workdir: Path, processes: bool = True) -> dict:
    """One line of the matrix."""
    d = workdir / arch
    save_tiny_model(arch, d)
    out = {"architecture": arch, "model_type": (ARCHITECTURES.get(arch) or REFUSED[arch])[0], "import": "yes",
           "exact": {}, "max_logit_error": {}, "notes": NOTES.get(arch, "")}
    try:
        with _home(workdir / "home"):
            store.import_dir(d, name=arch)
    except ModelError as exc:
        return {**out, "import": "refused", "notes": str(exc)}
    want, want_logits = reference(d)
    for parts in (2, 3):
        ids, logits = in_process(d, parts)
        err = float((logits - want_logits).abs().max())
        out["exact"][f"{parts}-stage"] = ids == want and err <= ATOL
        out["max_logit_error"][f"{parts}-stage"] = err
    if processes:
        (workdir / f"{arch}-procs").mkdir()
        out["exact"]["multi-process"] = multi_process(d, workdir / f"{arch}-procs") == want
    return out


def table(rows: list[dict]) -> str:
    """The README table of ``rows``."""
    def cell(r: dict, key: str) -> str:
        if r["import"] != "yes":
            return "—"
        v = r["exact"].get(key)
        return "not run" if v is None else ("yes" if v else "**NO**")

    lines = ["| architecture | import | 2-stage exact | 3-stage exact | multi-process exact | notes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        name = r["architecture"] if r["architecture"] == r["model_type"] else f"{r['architecture']} ({r['model_type']})"
        notes = r["notes"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {r['import']} | {cell(r, '2-stage')} | {cell(r, '3-stage')} | "
                     f"{cell(r, 'multi-process')} | {notes} |")
    return "\n".join(lines)


def update_readme(readme: Path, rows: list[dict]) -> None:
    """Replace the table between the README's models-matrix markers."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: f"{START}\n{table(rows)}\n{END}", text,
                 flags=re.DOTALL)
    readme.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.models_matrix", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated architectures (default: all)")
    ap.add_argument("--no-processes", action="store_true", help="skip the multi-process column")
    ap.add_argument("--readme", help="rewrite the Supported models table of this README")
    ap.add_argument("--save", help="also write the JSON result to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # tiny matrices: threads only add contention
    archs = [a for a in args.only.split(",") if a] or [*ARCHITECTURES, *REFUSED]
    with tempfile.TemporaryDirectory(prefix="models-matrix-") as tmp:
        rows = [row(a, Path(tmp), processes=not args.no_processes) for a in archs]
    result = {"bench": "models_matrix", "tokens": TOKENS, "atol": ATOL, "blocks": BLOCKS, "rows": rows,
              "all_exact": all(all(r["exact"].values()) for r in rows if r["import"] == "yes")}
    if args.readme:
        update_readme(Path(args.readme), rows)
    return emit(result, args.save, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
