"""``tessera job``: submit a job with escrow, follow it, read its result."""

from __future__ import annotations

import json

import click

from tessera.cli import job_money
from tessera.cli.checks import fee_floor_early, require_model
from tessera.cli.options import account_options, eth_to_wei, make_client, rpc_options
from tessera.cli.present import NO_MAJORITY_EXIT, PENDING_EXIT, LiveText, show_result


@click.group()
def job() -> None:
    """Submit jobs and read their status and results."""


@job.command()
@click.option("--model", required=True, help="Model as registered on chain: NAME (e.g. smollm2-135m) or 0xPUBLISHER/NAME.")
@click.option("--prompt", default=None, help="Prompt text (language models).")
@click.option("--image-index", type=int, default=None, help="Index of a digits test image (classifier models).")
@click.option("--max-tokens", default=32, show_default=True, type=click.IntRange(1, 4096), help="Tokens to generate.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(0, 10), help="0 = greedy.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the reproducible sampling.")
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(1),
              help="Node-disjoint replicas (at most the contract's MAX_REPLICAS).")
@click.option("--fee", default=None, help="Fee in ETH, held in escrow (default: the floor the planned nodes ask).")
@click.option("--codec", default="int8-outlier", show_default=True,
              type=click.Choice(["fp32", "fp16", "bf16", "int8-absmax", "int8-outlier", "int8-dynamic"]),
              help="Activation codec between hops.")
@click.option("--dtype", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Activation dtype class every hop must run.")
@click.option("--int8-weights", is_flag=True, help="Allow nodes with int8-mixed weights (default: exact weights).")
@click.option("--verify", type=click.Choice(["replicated", "optimistic"]), default="replicated", show_default=True,
              help="replicated: R replicas, divergence judged by drawn verifiers; optimistic: one replica, audited.")
@click.option("--audit-bps", type=click.IntRange(0, 10_000), default=1000, show_default=True,
              help="With --verify optimistic: audit probability x 10000.")
@click.option("--mode", type=click.Choice(["latency", "throughput", "price"]), default="latency", show_default=True)
@click.option("--weights", default=None, help="Router weights, e.g. price=1,stake=0.5,reputation=2.")
@click.option("--commit-window", default=300, show_default=True, type=click.IntRange(1), help="Seconds to commit.")
@click.option("--reveal-window", default=120, show_default=True, type=click.IntRange(1), help="Seconds to reveal.")
@click.option("--wait", is_flag=True, help="Follow the job to finalization and print the result.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
@rpc_options
@account_options
def submit(model, prompt, image_index, max_tokens, temperature, seed, replicas, fee, codec, dtype, int8_weights,
           verify, audit_bps, mode, weights, commit_window, reveal_window, wait, as_json, rpc_url, chain_kind, key,
           account_index) -> None:
    """Plan replicas with the router, escrow the fee and submit a job. With --wait, show the text
    as the head produces it (a preview, unverified until the job settles), then the settled
    result; the exit status is 4 when nobody was paid (the fee is refunded as credit:
    `tessera job withdraw`). The input is checked against the model and the fee against a floor
    before anything is escrowed.

    \b
    Examples:
      tessera job submit --model smollm2-135m --prompt "The capital of France is" --wait --account 9
      tessera job submit --model digits-cnn --image-index 0 --replicas 3 --fee 0.01 --wait --json
      tessera job submit --model smollm2-135m --prompt "Hi" --mode price --weights reputation=2
      tessera job submit --model smollm2-135m --prompt "Hi" --verify optimistic --audit-bps 1000
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from proto.types import DType, ExecSpec, JobMode, WeightsMode
    from router.types import Weights
    from tessera import requester

    data = _job_input(prompt, image_index)
    client = make_client(rpc_url, chain_kind, key, account_index)
    require_model(client, model)  # an unknown model is named before anything is planned
    fee_floor_early(client, model, None if fee is None else eth_to_wei(fee), replicas, max_tokens)
    optimistic = verify == "optimistic"
    exec_spec = ExecSpec(DType[dtype.upper()], WeightsMode.INT8_MIXED if int8_weights else WeightsMode.EXACT,
                         JobMode.OPTIMISTIC if optimistic else JobMode.REPLICATED, audit_bps if optimistic else 0)
    spec = requester.JobSpec(model, data, max_tokens,
                             None if fee is None else eth_to_wei(fee), 1 if optimistic else replicas, temperature,
                             seed, codec, commit_window, reveal_window, exec_spec)
    log = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))
    live = LiveText(client, model, log) if wait and not as_json else None

    def on_progress(u) -> None:
        if live is not None:
            live.on_update(u)
        log(u.line())

    try:
        res = requester.run_job(client, spec, mode=mode, weights=Weights.parse(weights), wait=wait,
                                on_progress=on_progress)
    finally:
        if live is not None:
            live.stop()
    if not wait:
        click.echo(json.dumps({"job_id": res.job_id}) if as_json else str(res.job_id))
        return
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        show_result(res)
    if res.outcome == "refunded":
        if as_json:  # the text output already said why
            click.echo(f"job {res.job_id}: nobody paid: {res.reason}", err=True)
        raise click.exceptions.Exit(NO_MAJORITY_EXIT)


def _job_input(prompt: str | None, image_index: int | None) -> bytes:
    # lazy: torch imported only when this command runs (fast --help)
    from worker.node.payload import encode_prompt

    if (prompt is None) == (image_index is None):
        raise click.UsageError("give exactly one of --prompt TEXT (language models) or --image-index N (classifiers)")
    if prompt is not None:
        return encode_prompt(prompt)
    # lazy: torch imported only when this command runs (fast --help)
    from worker.vision.data import digits_test_split, encode_images

    images, _ = digits_test_split()
    if not 0 <= image_index < len(images):
        raise click.BadParameter(f"the digits test split has {len(images)} images; use 0..{len(images) - 1}",
                                 param_hint="--image-index")
    return encode_images(images[image_index:image_index + 1])


@job.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@rpc_options
def status(job_id, as_json, rpc_url, chain_kind) -> None:
    """Commit/reveal progress of a job.

    \b
    Examples:
      tessera job status 4
      tessera job status 4 --json
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from tessera import requester

    p = requester.progress(make_client(rpc_url, chain_kind, None, None, required=False), job_id)
    click.echo(json.dumps(p.__dict__) if as_json else p.line())


@job.command()
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@rpc_options
def result(job_id, as_json, rpc_url, chain_kind) -> None:
    """The decoded output, each replica's verdict and the payouts of a job, as the chain recorded
    them. Exit status 3 while it is open or disputed, 4 when nobody was paid.

    \b
    Examples:
      tessera job result 4
      tessera job result 4 --json | jq .text
    """
    # lazy: web3 imported only when this command runs (fast --help)
    from tessera import requester

    res = requester.result(make_client(rpc_url, chain_kind, None, None, required=False), job_id)
    if as_json:
        click.echo(json.dumps(res.to_json()))
    else:
        show_result(res)
    if res.outcome == "pending":
        raise click.exceptions.Exit(PENDING_EXIT)
    if res.outcome == "refunded":
        raise click.exceptions.Exit(NO_MAJORITY_EXIT)


for _cmd in (job_money.balance, job_money.withdraw, job_money.list_, job_money.finalize, job_money.cancel):
    job.add_command(_cmd)
