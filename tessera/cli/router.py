"""``tessera router``: plan replicas, serve plans over HTTP, advise operators.

The network comes from the chain (deployment file + NodeRegistry + gRPC probes
of the workers) or, with ``--snapshot FILE.json``, from a file (offline; the
format is :meth:`router.types.Snapshot.to_json`).
"""

from __future__ import annotations

import json

import click

snapshot_opt = click.option(
    "--snapshot", "snapshot", type=click.Path(dir_okay=False), default=None,
    help="Read the network from this JSON file instead of the chain.",
)
rpc_opt = click.option("--rpc-url", default=None, envvar="TESSERA_RPC_URL", help="Chain RPC (default: the deployment's).")
no_probe_opt = click.option("--no-probe", is_flag=True, help="Use registry figures only; do not ping the workers.")


@click.group()
def router() -> None:
    """Plan replicas, serve plans over HTTP, advise operators."""


@router.command()
@click.option("--model", required=True, help="Model name as registered on chain.")
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(1, 64), help="Node-disjoint replicas.")
@click.option("--mode", type=click.Choice(["latency", "throughput", "price"]), default="latency", show_default=True,
              help="What to optimise.")
@click.option("--weights", default=None, help="Personal weights, e.g. price=1,stake=0.5,reputation=2 (mode units).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@snapshot_opt
@rpc_opt
@no_probe_opt
def plan(model, replicas, mode, weights, as_json, snapshot, rpc_url, no_probe) -> None:
    """Pick node-disjoint replicas for MODEL and predict their latency per token.

    \b
    Examples:
      tessera router plan --model smollm2-135m --replicas 3 --mode latency
      tessera router plan --model smollm2-135m --snapshot net.json --json
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from router.plan import plan_replicas
    from router.source import make_source
    from router.types import Weights

    snap = make_source(snapshot, rpc_url, probe=not no_probe)(model)
    rp = plan_replicas(snap, replicas, mode, Weights.parse(weights))
    if as_json:
        click.echo(json.dumps(rp.to_json()))
        return
    for r, (rep, c) in enumerate(zip(rp.plan.replicas, rp.costs)):
        click.echo(f"replica {r}: {c.latency_ms:.1f} ms/token, slowest hop {c.bottleneck_tps:.1f} tokens/s, "
                   f"{c.price_wei} wei/token")
        for h in rep.hops:
            click.echo(f"  {h.node}  blocks [{h.start}, {h.end})")
    if not rp.optimal:
        click.secho("note: search limit reached; this is the best plan found, not proven optimal", fg="yellow")


@router.command()
@click.option("--port", default=8547, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind (0.0.0.0 only inside a container network).")
@snapshot_opt
@rpc_opt
@no_probe_opt
def serve(port, host, snapshot, rpc_url, no_probe) -> None:
    """Serve POST /plan and GET /advise over HTTP (127.0.0.1 by default).

    \b
    Examples:
      tessera router serve --port 8547
      curl -s localhost:8547/plan -d '{"model": "smollm2-135m", "replicas": 2}'
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from router.server import RouterServer
    from router.source import make_source

    srv = RouterServer(make_source(snapshot, rpc_url, probe=not no_probe), port=port, host=host)
    click.echo(f"router listening on {srv.url} (POST /plan, GET /advise?model=M); Ctrl-C stops it", err=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.httpd.server_close()


@router.command()
@click.option("--model", required=True, help="Model name as registered on chain.")
@click.option("--max-blocks", default=None, type=click.IntRange(1), help="Blocks this operator's memory holds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@snapshot_opt
@rpc_opt
def advise(model, max_blocks, as_json, snapshot, rpc_url) -> None:
    """Show each block's served capacity and the span a new operator should take.

    \b
    Examples:
      tessera router advise --model smollm2-135m
      tessera router advise --model smollm2-135m --max-blocks 10
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from router.server import advice
    from router.source import make_source

    a = advice(make_source(snapshot, rpc_url, probe=False)(model), max_blocks)
    if as_json:
        click.echo(json.dumps(a))
        return
    cap = a["capacity"]
    top = max(cap + [1])
    for b, c in enumerate(cap):
        click.echo(f"block {b:3d}  {c:3d} node(s)  {'#' * round(20 * c / top)}")
    s, e = a["suggested_span"]
    click.echo(f"suggested span: [{s}, {e})  (half-open; `tessera operator register` takes it when no span is given)")
