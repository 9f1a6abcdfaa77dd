"""How the job commands show a finalized (or pending) job; the data comes from the chain."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import click

from tessera.units import fmt_eth


def wide_console():
    """A rich Console that does not cut tables at 80 columns when stdout is a pipe or a log."""
    from rich.console import Console  # lazy: rich only for tables

    c = Console()
    return c if c.is_terminal else Console(width=400)


NO_MAJORITY_EXIT = 4  # exit status of `job submit --wait` / `job result` when nobody was paid (refund)
PENDING_EXIT = 3  # exit status of `job result` while the job is open or disputed


def show_result(res, echo: Callable[[str], None] = click.echo) -> None:
    """Output, how it was settled, each replica's verdict, the verifiers' attestations and what
    JobFinalized credited and slashed."""
    if res.outcome == "pending":
        echo(f"job {res.job_id}: not finalized yet ({res.status or 'open'}; reveals so far: {len(res.reveals)})")
        return
    n = len(res.plan.replicas)
    if res.outcome == "refunded":
        echo(f"job {res.job_id}: nobody paid: {res.reason}; refunded {fmt_eth(res.refund)} to the requester "
             "as JobMarket credit")
    else:
        how = {"agreed": "agree", "verified": "were found honest by the verifiers",
               "unverified": "revealed outputs and were paid UNVERIFIED (they disagree and no verifier could "
                             "be drawn; the output shown is the lowest replica's)"}[res.outcome]
        echo(f"output: {res.readable!r}")
        echo(f"{len(res.winners)}/{n} replicas {how} (replicas {list(res.winners)}), "
             f"output hash {res.output_hash[:18]}...")
    for v in res.replicas():
        line = f"  replica {v.replica}: {v.verdict}"
        if v.output_hash:
            line += f"  {v.output_hash[:18]}..."
        echo(line + (f"  ({v.detail})" if v.detail else ""))
    s = res.settlement
    if s.verifiers:
        said = {a.verifier: a.verdicts for a in res.attestations if a.attested}
        echo("verifiers (drawn by the contract):")
        for v in s.verifiers:
            verdicts = said.get(v.node)
            echo(f"  {v.node}  {v.outcome}  +{fmt_eth(v.paid)}"
                 + (f"  verdicts {list(verdicts)}" if verdicts is not None else "  did not attest"))
    if res.payouts:
        echo("payouts:")
        for node, wei in res.payouts.items():
            echo(f"  {node}  +{fmt_eth(wei)}")
    for node, wei in res.slashes.items():
        echo(f"slashed {node}: {fmt_eth(wei)} of stake ({'burned' if s.burned else 'to the verifiers'})")
    if res.refund:
        echo(f"requester credited {fmt_eth(res.refund)} in JobMarket; `tessera job withdraw` moves the "
             "credit to the wallet (`tessera job balance` shows it)")
    echo(f"finalized in tx {res.finalize_tx}")


class LiveText:
    """Shows a job's text while its head produces it (``job submit --wait``): one line per update
    on a pipe, one line rewritten in place on a terminal. The text is a preview signed by one
    head; the settled output printed at the end is what the chain agreed on."""

    def __init__(self, client, model: str, echo: Callable[[str], None]):
        self.client, self.model, self.echo = client, model, echo
        self.plan = None
        self.cancel = threading.Event()
        self.tty = sys.stderr.isatty()
        self._thread: threading.Thread | None = None
        self._line_open = False  # a terminal line of text is being rewritten in place

    def on_update(self, u) -> None:
        # lazy: the requester's records import web3 (fast --help)
        from tessera.requester import Planned, Progress, Submitted

        if self._line_open:  # the progress line that follows starts on a line of its own
            click.echo("", err=True)
            self._line_open = False
        if isinstance(u, Planned):
            self.plan = u.plan
        elif isinstance(u, Submitted) and self.plan is not None:
            self._thread = threading.Thread(target=self._follow, args=(u.job_id,), daemon=True, name="live-text")
            self._thread.start()
        elif isinstance(u, Progress) and u.status == "finalized":
            self.stop()

    def stop(self, grace_s: float = 10.0) -> None:
        """Let the stream end by itself (it stops at the replica's last token), for at most ``grace_s``."""
        if self._thread is not None:
            self._thread.join(grace_s)
        self.cancel.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self._line_open:
            click.echo("", err=True)
            self._line_open = False

    def _follow(self, job_id: int) -> None:
        # lazy: grpc and the tokenizer only when a job is followed (fast --help)
        from proto.errors import ModelError
        from tessera.tokens import stream_tokens
        from worker.node.payload import tokenizer
        from worker.store import load_manifest, resolve

        try:
            directory = resolve(self.model)
            tok = tokenizer(str(directory)) if load_manifest(directory).kind == "causal-lm" else None
        except (ModelError, OSError):
            tok = None
        endpoints = {n.address: n.endpoint for n in self.client.list_nodes(self.model)}
        ids: list[int] = []
        for chunk in stream_tokens(self.plan, job_id, endpoints, wait_s=600, cancel=self.cancel):
            ids = list(chunk.ids) if chunk.restart else ids + list(chunk.ids)
            shown = repr(tok.decode(ids, skip_special_tokens=True)) if tok else f"{len(ids)} id(s)"
            line = f"text (unverified, replica {chunk.replica}): {shown}"
            if self.tty:
                click.echo("\r\033[K" + line, err=True, nl=False)
                self._line_open = True
            else:
                self.echo(line)
