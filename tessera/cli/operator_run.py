"""``tessera operator run``: the node daemon in the foreground."""

from __future__ import annotations

import logging
import signal
import threading

import click


@click.command(name="run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="node.toml with [node] (chain, key) and [worker] (model, span, port) tables.")
@click.option("--port", type=int, default=None, help="Override [worker] port.")
@click.option("--device", default=None, help="Override [worker] device (cpu, cuda, cuda:1).")
@click.option("--byzantine", is_flag=True, default=None, help="Corrupt outgoing activations (demo only).")
def run(config_path: str, port: int | None, device: str | None, byzantine: bool | None) -> None:
    """Serve this node's shard and follow jobs on chain until Ctrl-C.

    Prints `READY <port> <address>` once it serves, then one log line per job step.
    """
    # lazy: torch imported only when this command runs (fast --help)
    from worker.node.config import load
    from worker.node.daemon import NodeDaemon

    if not logging.getLogger().handlers or logging.getLogger().level > logging.INFO:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    node, worker = load(config_path, port=port, device=device, byzantine=byzantine)
    daemon = NodeDaemon(node, worker)
    bound = daemon.start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    click.echo(f"READY {bound} {daemon.me}", nl=True)
    click.echo(f"node {daemon.me} serves {daemon.manifest.name} [{daemon.wcfg.start}, {daemon.wcfg.end}) on "
               f"{daemon.wcfg.host}:{bound}; Ctrl-C stops it", err=True)
    done.wait()
    daemon.stop()
    click.echo("stopped", err=True)
