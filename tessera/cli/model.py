"""``tessera model``: fetch the built-in models, import local ones, list the store.

``register`` (put a stored model's commitment on chain) lives in
``tessera.cli.model_register`` and is attached here when that module exists.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import click

from proto import paths


def _input(m) -> dict | None:
    """The input tensor a user model's jobs give (``tessera_input`` of its config), None for others."""
    cfg = m.directory / "config.json" if m.directory is not None else None
    return json.loads(cfg.read_text()).get("tessera_input") if cfg is not None and cfg.is_file() else None


def _summary(m) -> dict:
    return {"name": m.name, "kind": m.kind, "family": m.family, "model_type": m.model_type,
            "num_blocks": m.num_blocks, "weights_root": "0x" + m.weights_root.hex(),
            "path": str(m.directory), "source": m.source, "input": _input(m)}


def _print(m, as_json: bool, took: float | None = None) -> None:
    if as_json:
        click.echo(json.dumps(_summary(m)))
        return
    extra = f" in {took:.1f} s" if took is not None else ""
    click.echo(f"{m.name}: {m.kind}, {m.family}/{m.model_type}, {m.num_blocks} blocks{extra}")
    click.echo(f"  weights root 0x{m.weights_root.hex()}")
    if _input(m) is not None:
        click.echo(f"  input: one {_input(m)['dtype']} tensor of shape {_input(m)['shape']} (job submit --input-file)")
    click.echo(f"  {m.directory}")


@click.group()
def model() -> None:
    """Fetch, import, list and register models."""


@model.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if the model is already stored.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
def fetch(name: str, force: bool, as_json: bool) -> None:
    """Store a built-in model: smollm2-135m, digits-cnn, digits-vit or minilm-l6 (sentence embeddings).

    \b
    Examples:
      tessera model fetch smollm2-135m
    """
    # lazy: rich only for the progress spinner
    from rich.console import Console

    # lazy: torch imported only when this command runs (fast --help)
    from worker.store.install import BUILTIN
    from worker.store.install import fetch as do_fetch

    already = (paths.models_dir() / name / "manifest.json").is_file() and not force
    t0 = time.time()
    if already or as_json:
        m = do_fetch(name, force=force)
    else:
        with Console(stderr=True).status(f"building {name}: {BUILTIN.get(name, ('', name))[1]}..."):
            m = do_fetch(name, force=force)
    _print(m, as_json, None if already else time.time() - t0)


@model.command(name="import")
@click.argument("source")
@click.option("--name", default=None, help="Name in the store and on chain (default: the directory's or file's name).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With a module:factory SOURCE: the model's state dict as a safetensors file.")
@click.option("--input-shape", default=None, help="With a module:factory SOURCE: the input tensor's shape, e.g. "
              "1,3,32,32 (a .pt2 program states its own).")
@click.option("--input-dtype", default="float32", show_default=True,
              type=click.Choice(["float32", "float16", "bfloat16", "int64"]), help="With a module:factory SOURCE.")
@click.option("--kwargs", "kwargs_json", default=None, help="With a module:factory SOURCE: the factory's keyword "
              "arguments as JSON, e.g. '{\"width\": 16}'.")
@click.option("--blocks", default=None, help="Attribute holding the blocks (an nn.ModuleList), e.g. layers "
              "(default: found from the model).")
@click.option("--force", is_flag=True, help="Replace a stored model of the same name.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
def import_(source: str, name: str | None, weights: str | None, input_shape: str | None, input_dtype: str,
            kwargs_json: str | None, blocks: str | None, force: bool, as_json: bool) -> None:
    """Store a model and hash its blocks. SOURCE is a local Hugging Face model directory, a
    torch.export program (.pt2), or a Python factory `package.module:callable` with --weights
    and --input-shape. Its stages must reproduce the unsplit model at 2 and 3 stages, or it is
    refused with the reason. Tensors that skip across a cut (residual connections) travel beside
    the main activation. A user model is a classifier: its jobs get the argmax of its logits.

    \b
    Examples:
      tessera model import ./my-hf-model --name my-model
      tessera model import resnet.pt2 --name my-resnet
      tessera model import mypkg.nets:make_resnet --weights resnet.safetensors --input-shape 1,3,32,32
    """
    t0 = time.time()
    path = Path(source).expanduser()
    if path.is_dir():
        # lazy: torch imported only when this command runs (fast --help)
        from worker.store import import_dir

        m = import_dir(path, name=name, force=force)
    elif path.is_file():
        # lazy: torch imported only when this command runs (fast --help)
        from worker.store.user import import_program

        m = import_program(path, name=name, blocks=blocks, force=force)
    elif ":" in source:
        if weights is None or input_shape is None or name is None:
            raise click.UsageError("a module:factory SOURCE needs --weights FILE, --input-shape N,N,... and --name")
        # lazy: torch imported only when this command runs (fast --help)
        from worker.store.user import import_factory

        m = import_factory(source, weights, name, _shape(input_shape), input_dtype, _kwargs(kwargs_json),
                           blocks=blocks, force=force)
    else:
        raise click.BadParameter(f"{source} is neither a directory, a .pt2 file nor a module:factory",
                                 param_hint="SOURCE")
    _print(m, as_json, time.time() - t0)


def _shape(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of sizes",
                                 param_hint="--input-shape") from None


def _kwargs(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--kwargs") from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--kwargs")
    return value


@model.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def list_(as_json: bool) -> None:
    """List the models in the store.

    \b
    Examples:
      tessera model list --json
    """
    # lazy: torch imported only when this command runs (fast --help)
    from worker.store import list_models

    ms = list_models()
    if as_json:
        click.echo(json.dumps([_summary(m) for m in ms]))
        return
    if not ms:
        click.echo(f"no models in {paths.models_dir()}; try `tessera model fetch smollm2-135m`")
    for m in ms:
        click.echo(f"{m.name:20s} {m.kind:11s} {m.family:6s} {m.num_blocks:3d} blocks  0x{m.weights_root.hex()[:16]}…")


try:
    model.add_command(importlib.import_module("tessera.cli.model_register").register)
except ModuleNotFoundError as exc:
    if exc.name != "tessera.cli.model_register":
        raise
