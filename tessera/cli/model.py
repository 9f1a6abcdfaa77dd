"""``tessera model``: fetch the built-in models, import local ones, list the store.

``register`` (put a stored model's commitment on chain) lives in
``tessera.cli.model_register`` and is attached here when that module exists.
"""

from __future__ import annotations

import importlib
import json
import time

import click

from proto import paths


def _summary(m) -> dict:
    return {"name": m.name, "kind": m.kind, "family": m.family, "model_type": m.model_type,
            "num_blocks": m.num_blocks, "weights_root": "0x" + m.weights_root.hex(),
            "path": str(m.directory), "source": m.source}


def _print(m, as_json: bool, took: float | None = None) -> None:
    if as_json:
        click.echo(json.dumps(_summary(m)))
        return
    extra = f" in {took:.1f} s" if took is not None else ""
    click.echo(f"{m.name}: {m.kind}, {m.family}/{m.model_type}, {m.num_blocks} blocks{extra}")
    click.echo(f"  weights root 0x{m.weights_root.hex()}")
    click.echo(f"  {m.directory}")


@click.group()
def model() -> None:
    """Fetch, import, list and register models."""


@model.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if the model is already stored.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
def fetch(name: str, force: bool, as_json: bool) -> None:
    """Store a built-in model: smollm2-135m, digits-cnn or digits-vit.

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
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--name", default=None, help="Name in the store and on chain (default: the directory's name).")
@click.option("--force", is_flag=True, help="Replace a stored model of the same name.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
def import_(directory: str, name: str | None, force: bool, as_json: bool) -> None:
    """Copy a local Hugging Face model directory into the store and hash its blocks.

    \b
    Examples:
      tessera model import ./my-hf-model --name my-model
    """
    # lazy: torch imported only when this command runs (fast --help)
    from worker.store import import_dir

    t0 = time.time()
    _print(import_dir(directory, name=name, force=force), as_json, time.time() - t0)


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
