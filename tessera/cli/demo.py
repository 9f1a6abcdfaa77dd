"""``tessera demo``: the whole product end to end on a local devnet it starts and stops."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time

import click

from proto import paths
from tessera.cli.options import eth_to_wei
from tessera.cli.present import NO_MAJORITY_EXIT
from tessera.units import fmt_eth


@click.command()
@click.option("--prompt", default="The capital of France is", show_default=True, help="Prompt text.")
@click.option("--max-tokens", default=32, show_default=True, type=click.IntRange(1, 512))
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(1, 4), help="Replicas (2 hops each).")
@click.option("--byzantine", default=0, show_default=True, type=click.IntRange(0, 4),
              help="Nodes that corrupt their activations: their replicas diverge and the job is disputed "
                   "(the demo network has no full node to verify, so it settles unverified).")
@click.option("--image", is_flag=True, help="Classify a digits image with the sharded CNN instead.")
@click.option("--fee", default="0.03", show_default=True, help="Fee in ETH.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on the last line.")
@click.option("--keep-logs", is_flag=True, help="Keep the demo's work folder (node logs, configs).")
def demo(prompt, max_tokens, replicas, byzantine, image, fee, as_json, keep_logs) -> None:
    """Start anvil, deploy, register and start operator nodes, submit a job, show the
    consensus and the payouts, then stop everything (also on Ctrl-C or failure).

    \b
    Examples:
      tessera demo
      tessera demo --byzantine 1
      tessera demo --image --json
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from tessera import requester
    from tessera.devcluster import DevCluster

    # lazy: torch imported only when this command runs (fast --help)
    from worker.node.payload import encode_prompt

    if byzantine >= replicas and byzantine:
        raise click.BadParameter("with that many corrupt nodes no honest majority can exist; use fewer",
                                 param_hint="--byzantine")
    workdir = paths.home() / "demo" / time.strftime("%Y%m%d-%H%M%S")
    say = (lambda s: click.echo(s, err=True))
    t0 = time.time()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally block on kill
    model = "digits-cnn" if image else "smollm2-135m"
    # byzantine nodes: the tails of the first replicas' spans (each node serves one replica)
    spans_n = 2
    bad = tuple(spans_n * i + 1 for i in range(byzantine))
    cluster = DevCluster(workdir, model=model, copies=replicas, byzantine=bad)
    summary = {}
    try:
        cluster.start(on_step=lambda s: say(f"[{time.time() - t0:5.1f}s] {s}"))
        for n in cluster.nodes:
            tag = "  (byzantine)" if n.byzantine else ""
            say(f"  node {n.address}  blocks [{n.span[0]}, {n.span[1]})  127.0.0.1:{n.port}{tag}")
        client = cluster.client()
        if image:
            # lazy: torch imported only when this command runs (fast --help)
            from worker.vision.data import digits_test_split, encode_images

            images, labels = digits_test_split()
            data, expect = encode_images(images[:1]), int(labels[0])
        else:
            data, expect = encode_prompt(prompt), None
        spec = requester.JobSpec(model, data, max_tokens, eth_to_wei(fee), replicas, commit_window_s=600,
                                 reveal_window_s=120)
        res = requester.run_job(client, spec, on_progress=lambda u: say(f"[{time.time() - t0:5.1f}s] {u.line()}"))
        text = res.readable if res.output else ""
        click.echo("")
        if image:
            click.echo(f"class: {text}  (label {expect})")
        else:
            click.echo(f"prompt: {prompt!r}")
            click.echo(f"output: {text!r}")
        if res.outcome == "refunded":
            click.echo(f"nobody paid: {res.reason}; refunded {fmt_eth(res.refund)}")
        click.echo(f"{res.outcome}: {len(res.winners)}/{replicas} replicas paid: {list(res.winners)}")
        for v in res.replicas():
            nodes = ", ".join(h2.node[:10] for h2 in res.plan.replicas[v.replica].hops)
            click.echo(f"  replica {v.replica} ({nodes}): {v.output_hash[:14]}...  {v.verdict}"
                       + (f" ({v.detail})" if v.detail else ""))
        click.echo("payouts (from the JobFinalized event):")
        for node in cluster.nodes:
            rec = client.get_node(node.address)
            paid = res.payouts.get(node.address, 0)
            click.echo(f"  {node.address}{' (byzantine)' if node.byzantine else ''}: +{fmt_eth(paid)}, "
                       f"reputation {rec.reputation:.3f}")
        summary = {"job_id": res.job_id, "model": model, "prompt": None if image else prompt, "output": text,
                   "outcome": res.outcome, "winners": list(res.winners), "replicas": replicas,
                   "byzantine_nodes": [n.address for n in cluster.nodes if n.byzantine],
                   "payouts_wei": {k: str(v) for k, v in res.payouts.items()},
                   "seconds": round(time.time() - t0, 1)}
    finally:
        say(f"[{time.time() - t0:5.1f}s] stopping nodes and anvil")
        cluster.close()
        if not keep_logs and summary:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not summary:
            say(f"logs kept in {workdir}")
    if as_json:
        click.echo(json.dumps(summary))
    if summary.get("outcome") == "refunded":
        raise click.exceptions.Exit(NO_MAJORITY_EXIT)
