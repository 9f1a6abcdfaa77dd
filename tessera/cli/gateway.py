"""``tessera gateway``: the OpenAI-compatible HTTP server and the network explorer."""

from __future__ import annotations

import click

from tessera.cli.options import account_options, eth_to_wei, make_client, rpc_options

CODECS = ["fp32", "fp16", "bf16", "int8-absmax", "int8-outlier", "int8-dynamic"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 exposes it).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--fee", default="0.01", show_default=True, help="Fee per request in ETH, escrowed until it settles.")
@click.option("--replicas", default=2, show_default=True, type=click.IntRange(1),
              help="Replicas per request; the answer needs a strict majority of them.")
@click.option("--codec", default="int8-outlier", show_default=True, type=click.Choice(CODECS))
@click.option("--mode", type=click.Choice(["latency", "throughput", "price"]), default="latency", show_default=True)
@click.option("--weights", default=None, help="Router weights, e.g. price=1,stake=0.5,reputation=2.")
@click.option("--max-tokens", "default_max_tokens", default=64, show_default=True, type=click.IntRange(1),
              help="Tokens per request when the request names none.")
@click.option("--max-tokens-limit", default=512, show_default=True, type=click.IntRange(1),
              help="Most tokens one request may ask for.")
@click.option("--commit-window", default=300, show_default=True, type=click.IntRange(1), help="Seconds to commit.")
@click.option("--reveal-window", default=120, show_default=True, type=click.IntRange(1), help="Seconds to reveal.")
@rpc_options
@account_options
def gateway(host, port, fee, replicas, codec, mode, weights, default_max_tokens, max_tokens_limit, commit_window,
            reveal_window, rpc_url, chain_kind, key, account_index) -> None:
    """Serve an OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions,
    with "stream": true as server-sent events) that pays for each request from the requester
    key (--key/--account) through escrow, and the network explorer on /explorer.

    Streamed tokens are a preview signed by one replica's head ("verified": false); the last
    event carries the settled consensus, the job id and the transaction hashes.

    \b
    Examples:
      tessera gateway --account 9 --port 8080
      curl localhost:8080/v1/completions -H 'content-type: application/json' \\
        -d '{"model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 8}'
      python -c "import openai; c = openai.OpenAI(base_url='http://127.0.0.1:8080/v1', api_key='-'); \\
        print(c.chat.completions.create(model='smollm2-135m', messages=[{'role': 'user', 'content': 'Hi'}]))"
      open http://127.0.0.1:8080/explorer
    """
    # lazy: web3, torch, fastapi and uvicorn only when the gateway runs (fast --help)
    import uvicorn

    # lazy: see above
    from router.types import Weights
    from tessera.gateway.app import create_app
    from tessera.gateway.service import Gateway, Settings

    client = make_client(rpc_url, chain_kind, key, account_index)
    settings = Settings(eth_to_wei(fee), replicas, codec, mode, Weights.parse(weights), commit_window, reveal_window,
                        default_max_tokens, max_tokens_limit)
    gw = Gateway(client, settings)
    served = [m["id"] for m in gw.models()]
    click.echo(f"gateway for chain {client.deployment.chain_id}, paying from {client.address}; models: "
               f"{', '.join(served) or 'none installed here and registered on chain'}", err=True)
    click.echo(f"OpenAI API on http://{host}:{port}/v1, explorer on http://{host}:{port}/explorer; Ctrl-C stops it",
               err=True)
    uvicorn.run(create_app(gw), host=host, port=port, log_level="warning")
