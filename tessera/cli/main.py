"""Entry point of the ``tessera`` console script.

Each command group lives in its own module under ``tessera.cli`` and is imported
only when used, so ``tessera --help`` stays fast and a group's heavy imports
(torch, web3) are paid only by the commands that need them.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from proto.errors import TesseraError

# name -> (module, attribute, one-line help shown by `tessera --help`)
GROUPS: dict[str, tuple[str, str, str]] = {
    "chain": ("tessera.cli.chain", "chain", "Start, stop and deploy to a devnet or any EVM chain."),
    "keys": ("tessera.cli.keys", "keys", "Create, import and list encrypted node keys."),
    "model": ("tessera.cli.model", "model", "Fetch, import, list and register models."),
    "operator": ("tessera.cli.operator", "operator", "Register, stake, run and withdraw as a node operator."),
    "router": ("tessera.cli.router", "router", "Plan replicas, serve plans over HTTP, advise operators."),
    "job": ("tessera.cli.job", "job", "Submit jobs and read their status and results."),
    "gateway": ("tessera.cli.gateway", "gateway", "Serve an OpenAI-compatible API and the network explorer."),
    "demo": ("tessera.cli.demo", "demo", "Run the whole product end to end on a local devnet."),
    "bench": ("tessera.cli.bench", "bench", "Benchmarks; each prints one JSON object on its last line."),
}


class LazyGroup(click.Group):
    """A click group whose sub-groups are imported on first use."""

    def list_commands(self, ctx):
        return sorted(GROUPS)

    def get_command(self, ctx, name):
        if name not in GROUPS:
            return None
        module, attr, _ = GROUPS[name]
        try:
            group = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                return _missing(name)
            raise
        return group

    def format_commands(self, ctx, formatter):
        rows = [(name, GROUPS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _missing(name: str) -> click.Command:
    @click.command(name=name, help=GROUPS[name][2])
    def cmd():
        raise click.ClickException(f"'tessera {name}' is not available in this build")

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="tessera")
def cli(verbose: int) -> None:
    """Tessera: decentralized, verifiable sharded inference."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    level = os.environ.get("TESSERA_LOG_LEVEL", logging.getLevelName(level))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a TesseraError prints its message, not a traceback."""
    try:
        rc = cli.main(args=argv, prog_name="tessera", standalone_mode=False)  # an int from click.exceptions.Exit
    except TesseraError as exc:
        from tessera.cli.checks import explain  # lazy: only on an error

        click.secho(f"error: {explain(exc)}", fg="red", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
