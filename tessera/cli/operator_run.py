"""``tessera operator run``: the one way to run a worker, in the foreground.

With ``--config node.toml`` it is the on-chain node daemon; with ``--plan-file
plan.json`` it serves its span for the routes in that file, without a chain
(tests, benchmarks). Its worker flags are generated from
:class:`worker.config.WorkerConfig`, one per field, so a new setting gets its flag.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from typing import Callable, get_args

import click

from worker.config import WorkerConfig
from worker.node.config import NodeConfig, load


def worker_options(f):
    """One flag per WorkerConfig field (``session_ttl_s`` -> ``--session-ttl-s``), its help from the
    field's description; a flag left out stays None, so the file's value or the default holds."""
    for name, field in reversed(WorkerConfig.model_fields.items()):
        kind = next(t for t in get_args(field.annotation) or (field.annotation,) if t is not type(None))
        flag = "--" + name.replace("_", "-")
        desc = field.description
        text = (desc if desc[1:2].isupper() else desc[:1].upper() + desc[1:]) + "."  # gRPC stays gRPC
        if field.default is not None:
            text += f" [default: {str(field.default).lower() if kind is bool else field.default}]"
        if kind is bool:
            f = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=text)(f)
        else:
            f = click.option(flag, name, type=kind, default=None, help=text)(f)
    return f


@click.command(name="run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="node.toml: [node] (chain, key) and [worker] (model, span, port); runs the on-chain daemon.")
@click.option("--plan-file", type=click.Path(dir_okay=False), default=None,
              help="Serve the job routes in this JSON file (worker.planview.StaticPlanView) instead of following "
                   "the chain: tests and benchmarks. [node] of --config is then unused.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None, envvar="TESSERA_LOG_FORMAT",
              help="Log lines as text or as one JSON object each (for log collectors). [default: text]")
@worker_options
def run(config_path: str | None, plan_file: str | None, log_format: str | None, **flags) -> None:
    """Serve this node's span until Ctrl-C: follow jobs on chain (--config) or serve a static plan (--plan-file).

    Every [worker] setting of node.toml is also a flag, which overrides the file.
    Start-up logs each stage (chain, weight check, model load) and then prints
    `READY <port> <address>` on stdout. An on-chain node also serves /metrics and
    /health over HTTP (the gRPC port + 1000 unless --metrics-port), and stops by
    itself (exit status 3) once it is unbonding or exited on chain and its open
    jobs are settled.

    \b
    Examples:
      tessera operator run --config node.toml
      tessera operator run --config node.toml --port 50052 --device cuda --log-format json
      tessera operator run --plan-file plan.json --model-dir ./m --start 0 --end 15 --key-file node.key
    """
    if config_path is None and plan_file is None:
        raise click.UsageError("give --config node.toml (jobs on chain) or --plan-file plan.json (a static plan)")
    setup_logging(log_format or "text")
    logging.getLogger(__name__).info("starting: loading torch and the node's libraries")
    node, wcfg = load(config_path, **flags) if config_path else (None, WorkerConfig.build(**flags))
    finished = threading.Event()
    if plan_file is not None:
        port, address, what, stop = _serve_plan(wcfg, plan_file)
    else:
        port, address, what, stop, finished = _serve_chain(node, wcfg)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    click.echo(f"READY {port} {address}")
    click.echo(f"node {address} serves {what} on {wcfg.host}:{port}; Ctrl-C stops it", err=True)
    while not done.wait(0.5) and not finished.is_set():
        pass
    stop()
    click.echo("stopped", err=True)
    if finished.is_set() and not done.is_set():
        raise click.exceptions.Exit(3)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(fmt: str) -> None:
    """INFO-level logs on stderr, as text or JSON lines (the CLI's -v/-vv may ask for DEBUG)."""
    root = logging.getLogger()
    level = min(root.level, logging.INFO) if root.handlers else logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _serve_plan(wcfg: WorkerConfig, plan_file: str) -> tuple[int, str, str, Callable[[], None]]:
    # lazy: torch, grpc and eth_utils only when a worker runs (fast --help)
    from worker import server
    from worker.planview import StaticPlanView

    running = server.serve(wcfg, StaticPlanView.from_file(plan_file))
    spec = running.runtime.stage.spec
    return (running.port, running.runtime.signer.address,
            f"{spec.model} [{spec.start}, {spec.end}) for the jobs in {plan_file}", running.stop)


def _serve_chain(node: NodeConfig, wcfg: WorkerConfig):
    from worker.node.daemon import NodeDaemon  # lazy: torch, grpc and web3 only when a node runs (fast --help)

    daemon = NodeDaemon(node, wcfg)
    port = daemon.start()

    def stop() -> None:
        daemon.stop()
        if daemon.exit_reason:
            click.echo(daemon.exit_reason, err=True)

    return (port, daemon.me, f"{daemon.manifest.name} [{daemon.wcfg.start}, {daemon.wcfg.end}) for jobs on chain",
            stop, daemon.finished)
