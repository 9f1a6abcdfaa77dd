"""Support-matrix rows of the one-pass kinds: encoders (embedding models) and user models (classifiers).

* encoders: the tiny BERT-family models of :data:`worker.shard.tiny.ENCODERS`
  and all-MiniLM-L6-v2 on its real weights (``tessera model fetch minilm-l6``),
  stored as embedding models; exact = the same embedding grid words as the
  unsplit model and embeddings within :data:`ATOL`;
* user models: :class:`worker.shard.tiny.TinyResNet` (two skips across cuts)
  imported as a ``module:factory`` with safetensors weights and as a
  ``torch.export`` program; exact = the same class ids and logits within
  :data:`ATOL`; :class:`~worker.shard.tiny.TinyBranchy` is refused;
* multi-process: the same output words from a 3-stage ring whose other stages
  are ``tessera operator run --plan-file`` processes (fp32 activations).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from bench._procs import bench_key, even_spans, free_port, ring_route, workers
from proto.errors import ModelError
from proto.types import embedding_words
from worker import codec, store
from worker.node.payload import head_inputs
from worker.planview import GenParams
from worker.ring import run_replica
from worker.sampling import argmax_classes
from worker.shard import load_full, load_stage
from worker.shard.tiny import ENCODERS, REFUSED_ENCODERS, TinyBranchy, TinyResNet, save_tiny_model, tiny_resnet
from worker.signing import Signer
from worker.store.user import import_factory, import_program

ATOL = 1e-5  # largest output difference from the unsplit model's, absolute
TEXT = "The quick brown fox jumps over the lazy dog."  # what minilm-l6 embeds

ENCODER_NOTES = {
    "bert": "token types, absolute positions, pooler dropped (sentence embeddings pool the hidden states)",
    "roberta": "positions offset past the padding id",
    "electra": "embedding projection 32 -> 64 before the layers",
    "distilbert": "no token types; layers under transformer.layer",
    "minilm-l6": "all-MiniLM-L6-v2, real weights: mean pooling + L2 norm as sentence-transformers; 1/256 grid",
}
USER_MODELS = {  # row name -> how it is imported
    "tiny-resnet-factory": "module:factory + safetensors weights",
    "tiny-resnet-pt2": "torch.export program (.pt2)",
}
USER_NOTES = "residual blocks; the stem's output and the raw input skip across cuts (up to 2 extra activations a hop)"
USER_REFUSED = {"tiny-branchy": TinyBranchy}


def _base(name: str, model_type: str, kind: str, notes: str) -> dict:
    return {"architecture": name, "model_type": model_type, "kind": kind, "import": "yes", "exact": {},
            "max_logit_error": {}, "notes": notes}


def _staged(model_dir: Path, spans, x):
    for a, b in spans:
        x = load_stage(model_dir, a, b)(x)
    return x


def one_pass_multi_process(model_dir: Path, workdir: Path, x, kind: str, num_blocks: int, parts: int = 3) -> list[int]:
    """Output words of a one-pass job through ``parts`` stages: this process is the head, the others are
    worker processes."""
    spans = even_spans(num_blocks, parts)
    ports = [0] + [free_port() for _ in spans[1:]]
    route = ring_route(1, model_dir.name, num_blocks, spans, ports, GenParams(max_tokens=1, codec=codec.FP32), kind)
    head = load_stage(model_dir, *spans[0])
    with workers(model_dir, spans, ports, [route], workdir):
        return run_replica(head, route, 0, x, Signer(bench_key(0)))


def _check(out: dict, model_dir: Path, x, want: torch.Tensor, words, kind: str, workdir: Path | None) -> dict:
    n = store.load_manifest(model_dir).num_blocks
    for parts in (2, 3):
        got = _staged(model_dir, even_spans(n, parts), x)
        err = float((got - want).abs().max())
        out["exact"][f"{parts}-stage"] = words(got) == words(want) and err <= ATOL
        out["max_logit_error"][f"{parts}-stage"] = err
    if workdir is not None:
        (workdir / f"{out['architecture']}-procs").mkdir()
        ids = x[0].tolist() if kind == "embedding" else x
        out["exact"]["multi-process"] = one_pass_multi_process(
            model_dir, workdir / f"{out['architecture']}-procs", ids, kind, n) == words(want)
    return out


def _embedding_words(e: torch.Tensor) -> list[int]:
    return embedding_words(e.flatten().tolist())


def encoder_row(arch: str, workdir: Path, processes: bool = True) -> dict:
    """One encoder line: a tiny seeded encoder, or ``minilm-l6`` on its real weights."""
    if arch == "minilm-l6":
        out = _base(arch, "bert", "embedding", ENCODER_NOTES[arch])
        d = store.fetch("minilm-l6").directory
        x = torch.tensor([head_inputs("embedding", d, TEXT.encode())])
    else:
        model_type = (ENCODERS.get(arch) or REFUSED_ENCODERS[arch])[0]
        out = _base(arch, model_type, "embedding", ENCODER_NOTES.get(arch, ""))
        try:
            d = store.import_dir(save_tiny_model(arch, workdir / arch), name=arch).directory
        except ModelError as exc:
            return {**out, "import": "refused", "notes": str(exc)}
        x = torch.randint(3, 256, (1, 10), generator=torch.Generator().manual_seed(4))
    return _check(out, d, x, load_full(d)(x), _embedding_words, "embedding", workdir if processes else None)


def user_row(name: str, workdir: Path, processes: bool = True) -> dict:
    """One user-model line: TinyResNet imported as a factory or as a program, or a refused model."""
    model_type = "fx"
    if name in USER_REFUSED:
        out = _base(name, model_type, "classifier", "")
        cls = USER_REFUSED[name]
        save_file(cls().state_dict(), workdir / f"{name}.safetensors")
        try:
            import_factory(f"{cls.__module__}:{cls.__qualname__}", workdir / f"{name}.safetensors", name, [2, 8])
        except ModelError as exc:
            return {**out, "import": "refused", "notes": str(exc)}
        raise SystemExit(f"{name} was expected to be refused")
    out = _base(name, model_type, "classifier", f"{USER_MODELS[name]}; {USER_NOTES}")
    model = tiny_resnet(seed=3)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    if name == "tiny-resnet-pt2":
        torch.export.save(torch.export.export(model, (x,)), workdir / "resnet.pt2")
        d = import_program(workdir / "resnet.pt2", name=name).directory
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, workdir / "resnet.safetensors")
        d = import_factory(f"{TinyResNet.__module__}:{TinyResNet.__qualname__}", workdir / "resnet.safetensors",
                           name, list(x.shape)).directory
    with torch.no_grad():
        want = model(x)
    return _check(out, d, x, want, argmax_classes, "classifier", workdir if processes else None)


ENCODER_ROWS = [*ENCODERS, "minilm-l6"]
USER_ROWS = [*USER_MODELS]
REFUSED_ROWS = {**{a: encoder_row for a in REFUSED_ENCODERS}, **{a: user_row for a in USER_REFUSED}}
