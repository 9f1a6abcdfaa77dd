"""``tessera model register``: commit a model's weights root on chain, under the sender.

The commitment comes from the model store's manifest (``tessera model import``
or ``fetch`` writes it), from ``--dir`` (a converted model directory, hashed
now) or from ``--hashes FILE`` (JSON with ``num_blocks``, ``weights_root`` or
``stage_hashes`` [input, blocks..., output], optional ``tokenizer_hash``,
``config_hash`` and ``context_length``; hex strings). The context length
(tokens: prompt + generated) comes from the model's config.json (1 for a
classifier) unless ``--context-length`` gives it. The model is registered under
the sending account: its id is (publisher, NAME), so nobody can squat a name.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from eth_hash.auto import keccak

from proto import paths
from proto.errors import ConfigError
from tessera.cli.options import account_options, make_client, rpc_options


def _hx(s: str | None) -> bytes:
    if not s:
        return b"\0" * 32
    b = bytes.fromhex(s.removeprefix("0x"))
    if len(b) != 32:
        raise ConfigError(f"{s!r} is not a 32-byte hex hash")
    return b


def commitment_from_hashes(d: dict) -> tuple[int, bytes, bytes, bytes]:
    """(num_blocks, weights_root, tokenizer_hash, config_hash) from a hashes JSON object."""
    if "stage_hashes" in d:
        stages = [_hx(h) for h in d["stage_hashes"]]
        num_blocks = int(d.get("num_blocks", len(stages) - 2))
        if len(stages) != num_blocks + 2:
            raise ConfigError(f"stage_hashes needs input, {num_blocks} blocks and output ({num_blocks + 2} hashes)")
        root = keccak(b"".join(stages))
    elif "weights_root" in d and "num_blocks" in d:
        num_blocks, root = int(d["num_blocks"]), _hx(d["weights_root"])
    else:
        raise ConfigError("hashes file needs num_blocks and weights_root, or stage_hashes")
    return num_blocks, root, _hx(d.get("tokenizer_hash")), _hx(d.get("config_hash"))


def _from_manifest(name: str, directory: Path | None) -> tuple[int, bytes, bytes, bytes, int | None]:
    """The commitment and context length of a stored (or given) model directory."""
    # lazy: torch imported only when this command runs (fast --help)
    from worker.limits import ModelLimits
    from worker.store.manifest import build_manifest, read_manifest

    d = directory or paths.models_dir() / name
    if not d.is_dir():
        raise ConfigError(f"model {name!r} is not in the store ({d}); run `tessera model fetch/import` "
                          "or pass --dir or --hashes")
    m = read_manifest(d) if (d / "manifest.json").exists() else build_manifest(d, name)
    ctx = 1 if m.kind == "classifier" else ModelLimits.of(d).context
    return m.num_blocks, m.weights_root, m.tokenizer_hash, m.config_hash, ctx


@click.command()
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Model directory (default: the store's copy of NAME).")
@click.option("--hashes", "hashes_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="JSON file with the commitment instead of a model directory.")
@click.option("--context-length", type=click.IntRange(1, 2**32 - 1), default=None,
              help="Tokens the model attends over, prompt + generated (default: from config.json).")
@rpc_options
@account_options
def register(name, directory, hashes_file, context_length, rpc_url, chain_kind, key, account_index) -> None:
    """Publish model NAME's weights commitment in the ModelRegistry, under this account.

    \b
    Examples:
      tessera model register smollm2-135m --account 0
      tessera model register my-model --hashes hashes.json --context-length 2048 --key publisher
    """
    if hashes_file:
        d = json.loads(hashes_file.read_text())
        (num_blocks, root, tok, cfg), ctx = commitment_from_hashes(d), d.get("context_length")
    else:
        click.echo(f"reading {name}'s weights commitment (hashing its blocks if it has no manifest yet)", err=True)
        num_blocks, root, tok, cfg, ctx = _from_manifest(name, directory)
    ctx = context_length or ctx
    if not ctx:
        raise ConfigError(f"no context length for {name!r} (none in its config.json or hashes file); "
                          "pass --context-length N")
    c = make_client(rpc_url, chain_kind, key, account_index)
    click.echo(f"publishing {name} ({num_blocks} blocks) from {c.address}", err=True)
    mid = c.register_model(name, num_blocks, int(ctx), root, tok, cfg)
    click.echo(f"registered {c.address}/{name} ({num_blocks} blocks, context {ctx}) as 0x{mid.hex()}, "
               f"weights root 0x{root.hex()}")
