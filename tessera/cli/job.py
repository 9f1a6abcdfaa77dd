"""``tessera job``: submit a job with escrow, follow it, read its result."""

from __future__ import annotations

import json
import sys

import click

from tessera.cli.options import account_options, eth_to_wei, fmt_eth, make_client, resolve_rpc, rpc_options


@click.group()
def job() -> None:
    """Submit jobs and read their status and results."""


def _model_dir(model: str):
    try:
        # lazy: torch imported only when this command runs (fast --help)
        from worker.store import resolve

        return resolve(model)
    except Exception:  # noqa: BLE001 - decoding text needs the tokenizer; ids are printed without it
        return None


def _print_result(res, model_dir, kind: str) -> None:
    # lazy: torch imported only when this command runs (fast --help)
    from worker.node.payload import describe_output

    if res.outcome == "pending":
        click.echo(f"job {res.job_id}: not finalized yet (reveals so far: {len(res.reveals)})")
        return
    if res.outcome == "refund":
        click.echo(f"job {res.job_id}: no majority; refunded {fmt_eth(res.refund)} to the requester")
    else:
        click.echo(f"output: {describe_output(kind, model_dir, res.output)!r}")
        n = len(res.plan.replicas)
        click.echo(f"consensus: {len(res.winners)}/{n} replicas agree (replicas {list(res.winners)}), "
                   f"output hash {res.output_hash[:18]}...")
        for r, h in sorted(res.reveals.items()):
            mark = "agreed" if r in res.winners else "OUTVOTED"
            click.echo(f"  replica {r}: {h[:18]}...  {mark}")
        click.echo("payouts:")
        for node, wei in res.payouts.items():
            click.echo(f"  {node}  {fmt_eth(wei)}")
        if res.refund:
            click.echo(f"requester credited {fmt_eth(res.refund)} (slashed stake)")


@job.command()
@click.option("--model", required=True, help="Model name as registered on chain (e.g. smollm2-135m).")
@click.option("--prompt", default=None, help="Prompt text (language models).")
@click.option("--image-index", type=int, default=None, help="Index of a digits test image (classifier models).")
@click.option("--max-tokens", default=32, show_default=True, type=click.IntRange(1, 4096), help="Tokens to generate.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 10), help="0 = greedy.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the reproducible sampling.")
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(1, 8), help="Node-disjoint replicas.")
@click.option("--fee", default="0.01", show_default=True, help="Fee in ETH, held in escrow.")
@click.option("--codec", default="int8-outlier", show_default=True,
              type=click.Choice(["fp32", "fp16", "bf16", "int8-absmax", "int8-outlier", "int8-dynamic"]),
              help="Activation codec between hops.")
@click.option("--mode", type=click.Choice(["latency", "throughput", "price"]), default="latency", show_default=True)
@click.option("--weights", default=None, help="Router weights, e.g. price=1,stake=0.5,reputation=2.")
@click.option("--commit-window", default=300, show_default=True, type=click.IntRange(1), help="Seconds to commit.")
@click.option("--reveal-window", default=120, show_default=True, type=click.IntRange(1), help="Seconds to reveal.")
@click.option("--wait", is_flag=True, help="Follow the job to finalization and print the result.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@rpc_options
@account_options
def submit(model, prompt, image_index, max_tokens, temperature, seed, replicas, fee, codec, mode, weights,
           commit_window, reveal_window, wait, as_json, rpc_url, chain_kind, key, account_index) -> None:
    """Plan replicas with the router, escrow the fee and submit a job."""
    # lazy: web3 imported only when this command runs (fast --help)
    from router.plan import plan_replicas
    from router.source import make_source
    from router.types import Weights
    from tessera import requester

    client = make_client(rpc_url, chain_kind, key, account_index)
    model_dir = _model_dir(model)
    data, kind = _job_input(model, prompt, image_index)
    routed = plan_replicas(make_source(None, resolve_rpc(rpc_url))(model), replicas, mode, Weights.parse(weights))
    log = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))
    log(f"planned {replicas} replica(s): " + "; ".join(
        " -> ".join(f"{h.node[:8]}[{h.start},{h.end})" for h in rep.hops) for rep in routed.plan.replicas))
    job_id = client.submit_job(routed.plan, data, max_tokens, eth_to_wei(fee), temperature=temperature, seed=seed,
                               codec=codec, commit_window_s=commit_window, reveal_window_s=reveal_window)
    log(f"submitted job {job_id} with {fee} ETH in escrow")
    if not wait:
        click.echo(json.dumps({"job_id": job_id}) if as_json else str(job_id))
        return
    res = requester.wait(client, job_id, timeout_s=commit_window + reveal_window + 60,
                         on_progress=lambda p: log(f"job {job_id}: {p.line()}"))
    if as_json:
        # lazy: torch imported only when this command runs (fast --help)
        from worker.node.payload import describe_output

        out = res.to_json()
        out["text"] = describe_output(kind, model_dir, res.output) if res.output else ""
        click.echo(json.dumps(out))
    else:
        _print_result(res, model_dir, kind)


def _job_input(model: str, prompt: str | None, image_index: int | None) -> tuple[bytes, str]:
    # lazy: torch imported only when this command runs (fast --help)
    from worker.node.payload import encode_prompt

    if (prompt is None) == (image_index is None):
        raise click.UsageError("give exactly one of --prompt TEXT (language models) or --image-index N (classifiers)")
    if prompt is not None:
        return encode_prompt(prompt), "causal-lm"
    # lazy: torch imported only when this command runs (fast --help)
    from worker.vision.data import digits_test_split, encode_images

    images, _ = digits_test_split()
    if not 0 <= image_index < len(images):
        raise click.BadParameter(f"the digits test split has {len(images)} images; use 0..{len(images) - 1}",
                                 param_hint="--image-index")
    return encode_images(images[image_index:image_index + 1]), "classifier"


@job.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@rpc_options
def status(job_id, as_json, rpc_url, chain_kind) -> None:
    """Commit/reveal progress of a job."""
    # lazy: web3 imported only when this command runs (fast --help)
    from tessera import requester

    p = requester.progress(make_client(rpc_url, chain_kind, None, None, required=False), job_id)
    click.echo(json.dumps(p.__dict__) if as_json else f"job {job_id}: {p.line()}")


@job.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@rpc_options
def result(job_id, as_json, rpc_url, chain_kind) -> None:
    """The decoded output, the agreeing replicas and the payouts of a finalized job."""
    # lazy: web3 imported only when this command runs (fast --help)
    from tessera import requester

    client = make_client(rpc_url, chain_kind, None, None, required=False)
    res = requester.result(client, job_id)
    name = client.get_model(client.get_request(job_id).model_id).name
    model_dir = _model_dir(name)
    kind = "causal-lm"
    if model_dir is not None:
        # lazy: torch imported only when this command runs (fast --help)
        from worker.store import load_manifest

        kind = load_manifest(model_dir).kind
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        _print_result(res, model_dir, kind)
    if res.outcome == "pending":
        sys.exit(3)
