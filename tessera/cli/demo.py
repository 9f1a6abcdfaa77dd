"""``tessera demo``: the whole product end to end on a local devnet it starts and stops."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from dataclasses import replace

import click

from proto import paths
from tessera.cli.options import eth_to_wei
from tessera.cli.present import NO_MAJORITY_EXIT
from tessera.units import fmt_eth

VERIFIERS = 2  # verifier nodes a byzantine demo starts (and the K its contracts draw)
ATTEST_WINDOW_S = 180  # the demo's attestation window: a verifier that hangs holds the demo this long at most


@click.command()
@click.option("--prompt", default="The capital of France is", show_default=True, help="Prompt text.")
@click.option("--max-tokens", default=32, show_default=True, type=click.IntRange(1, 512))
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(1, 4), help="Replicas (2 hops each).")
@click.option("--byzantine", default=0, show_default=True, type=click.IntRange(0, 4),
              help="Nodes that corrupt their activations: their replicas diverge, the job is disputed and "
                   "verifiers drawn by the contract re-execute it: honest replicas are paid (even outvoted), "
                   "the corrupt hop is named and slashed.")
@click.option("--verifiers", default=None, type=click.IntRange(0, 3),
              help=f"Full-span nodes outside the job that disputes draw from (the contract's K is set to this). "
                   f"Default: {VERIFIERS} with --byzantine, else 0 (an honest demo never disputes).")
@click.option("--image", is_flag=True, help="Classify a digits image with the sharded CNN instead.")
@click.option("--fee", default="0.03", show_default=True, help="Fee in ETH.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on the last line.")
@click.option("--keep-logs", is_flag=True, help="Keep the demo's work folder (node logs, configs).")
def demo(prompt, max_tokens, replicas, byzantine, verifiers, image, fee, as_json, keep_logs) -> None:
    """Start anvil, deploy, register and start operator nodes (and verifier nodes), submit a
    job, show the consensus, the verifiers' verdicts and the payouts, then stop everything
    (also on Ctrl-C or failure).

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
        raise click.BadParameter("at least one replica must stay honest; use fewer corrupt nodes",
                                 param_hint="--byzantine")
    if image and verifiers:
        raise click.BadParameter("verifiers re-execute language models only; leave it out with --image",
                                 param_hint="--verifiers")
    verifiers = (VERIFIERS if byzantine and not image else 0) if verifiers is None else verifiers
    workdir = paths.home() / "demo" / time.strftime("%Y%m%d-%H%M%S")
    say = (lambda s: click.echo(s, err=True))
    t0 = time.time()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally block on kill
    model = "digits-cnn" if image else "smollm2-135m"
    # byzantine nodes: the tails of the first replicas' spans (each node serves one replica)
    spans_n = 2
    bad = tuple(spans_n * i + 1 for i in range(byzantine))
    cluster = DevCluster(workdir, model=model, copies=replicas, byzantine=bad, verifiers=verifiers,
                         params=demo_params(verifiers))
    summary = {}
    try:
        cluster.start(on_step=lambda s: say(f"[{time.time() - t0:5.1f}s] {s}"))
        pool = {n.address for n in cluster.verifier_nodes}
        for n in cluster.nodes:
            tag = "  (byzantine)" if n.byzantine else "  (verifier)" if n.address in pool else ""
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
        res = requester.run_job(client, spec, source=_without(client, pool),
                                on_progress=lambda u: say(f"[{time.time() - t0:5.1f}s] {u.line()}"))
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
        show_replicas(res)
        show_verifiers(res)
        click.echo("payouts and slashes (from the JobFinalized event):")
        verifier_pay = {v.node: v.paid for v in (res.settlement.verifiers if res.settlement else ())}
        for node in cluster.nodes:
            rec = client.get_node(node.address)
            tag = " (byzantine)" if node.byzantine else " (verifier)" if node.address in pool else ""
            paid, slashed = res.payouts.get(node.address, 0) + verifier_pay.get(node.address, 0), \
                res.slashes.get(node.address, 0)
            click.echo(f"  {node.address}{tag}: +{fmt_eth(paid)}" + (f", slashed {fmt_eth(slashed)}" if slashed else "")
                       + f", stake {fmt_eth(rec.stake)}, reputation {rec.reputation:.3f}")
        summary = {"job_id": res.job_id, "model": model, "prompt": None if image else prompt, "output": text,
                   "outcome": res.outcome, "winners": list(res.winners), "replicas": replicas,
                   "byzantine_nodes": [n.address for n in cluster.nodes if n.byzantine],
                   "verifier_nodes": sorted(pool), "verdicts": [v.verdict for v in res.replicas()],
                   "attestations": {a.verifier: list(a.verdicts) for a in res.attestations if a.attested},
                   "payouts_wei": {k: str(v) for k, v in res.payouts.items()},
                   "verifiers_paid_wei": {k: str(v) for k, v in verifier_pay.items()},
                   "slashed_wei": {k: str(v) for k, v in res.slashes.items()},
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



def demo_params(verifiers: int):
    """DevCluster's deployment with K = ``verifiers`` and an attestation window a demo can wait out."""
    # lazy: web3 imported only when this command runs (fast --help)
    from chain.deploy import DeployParams

    return DeployParams(unbonding_period_s=7200, max_job_duration_s=1800, min_commit_window_s=10,
                        min_reveal_window_s=30, attest_window_s=ATTEST_WINDOW_S, finalize_grace_s=60,
                        verifiers=max(verifiers, 1))


def _without(client, pool: set[str]):
    """The router's view of the chain less the verifier nodes: they stay outside the job, so a
    dispute can draw them."""
    # lazy: the router imports numpy and grpc (fast --help)
    from router.source import client_source

    source = client_source(client)

    def get(model: str):
        snap = source(model)
        return replace(snap, nodes=tuple(n for n in snap.nodes if n.node not in pool))

    return get


def show_replicas(res) -> None:
    """One row per replica: its nodes, output and verdict (agreed, honest but divergent, faulty...)."""
    names = {"honest": "honest (the answer)" if res.outcome != "agreed" else "agreed",
             "divergent": "honest-divergent (paid, another output)"}
    for v in res.replicas():
        nodes = " -> ".join(h.node[:10] for h in res.plan.replicas[v.replica].hops)
        click.echo(f"  replica {v.replica} ({nodes}): {v.output_hash[:14] or '-'}...  {names.get(v.verdict, v.verdict)}"
                   + (f" ({v.detail})" if v.detail else ""))


def show_verifiers(res) -> None:
    """The verifiers the contract drew and what each attested (1 honest, 2 + k faulty at served hop k)."""
    s = res.settlement
    if s is None or not s.verifiers:
        if res.outcome == "unverified":
            click.echo("no verifier could be drawn (start the demo with --verifiers): every revealed replica "
                       "was paid unverified")
        return
    said = {a.verifier: a.verdicts for a in res.attestations if a.attested}
    click.echo("verifiers (drawn by the contract; verdict per replica: 1 honest, 2+k faulty at served hop k):")
    for v in s.verifiers:
        verdicts = said.get(v.node)
        click.echo(f"  {v.node}: {v.outcome}, +{fmt_eth(v.paid)}, "
                   + (f"attested {list(verdicts)}" if verdicts is not None else "did not attest"))
