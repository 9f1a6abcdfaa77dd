"""Checks the CLI makes before it spends anything, and friendlier words for some chain errors."""

from __future__ import annotations

import ipaddress
import re
import socket
import time

import click

from proto.errors import ConfigError, ContractError, JobError, TesseraError

_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); ConfigError with an example otherwise."""
    host, sep, port = endpoint.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ok_host = bool(host) and (_HOST.match(host) is not None or _is_ip(host))
    if not sep or not ok_host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"endpoint {endpoint!r} is not HOST:PORT (e.g. 203.0.113.7:50051 or node.example.org:50051); "
                          "other nodes and the router dial it over gRPC")
    if host in ("0.0.0.0", "::"):
        raise ConfigError(f"endpoint {endpoint!r} names no host others can reach; give this machine's public "
                          "address (bind 0.0.0.0 with [worker] host instead)")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def check_endpoint(endpoint: str, timeout_s: float = 2.0) -> None:
    """Refuse a malformed endpoint; warn (on stderr) when nothing answers there yet."""
    host, port = parse_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        click.echo(f"note: nothing answers at {endpoint} yet ({exc.strerror or exc}); start `tessera operator run` "
                   "there right after registering: the router skips nodes it cannot reach", err=True)


def require_model(client, name: str):
    """The model's record, or a JobError that names it (the chain only knows its hash)."""
    try:
        return client.get_model(name)
    except ContractError as exc:
        if exc.name != "ModelUnknown":
            raise
        raise JobError(f"model {name!r} is not registered on this chain; `tessera model register {name}` "
                       "publishes it") from None


def _utc(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(ts)))


_TIMES = {  # named contract errors with unix times -> words a person reads
    "NodeStillBonded": "the stake of {node} unlocks at {unbondAt} (chain time now {nowTs}); withdraw it then "
                       "(on a devnet, `tessera chain time-travel SECONDS` moves the clock)",
    "NodeIsUnbonding": "node {node} is unbonding (stake withdrawable from {unbondAt}); it cannot take this action",
    "JobCommitClosed": "the commit window of job {jobId} closed at {commitDeadline} (chain time now {nowTs})",
    "JobRevealNotOpen": "reveals of job {jobId} open at {commitDeadline} or once every replica committed "
                        "(chain time now {nowTs})",
    "JobRevealClosed": "the reveal window of job {jobId} closed at {revealDeadline} (chain time now {nowTs})",
    "JobNotFinalizable": "job {jobId} can be finalized once every replica revealed or after its reveal deadline "
                         "{revealDeadline} (chain time now {nowTs}); on a devnet `tessera chain time-travel` "
                         "moves the clock",
}


def explain(exc: TesseraError) -> str:
    """The message to show for ``exc``: times as UTC dates for the contract errors that carry them."""
    if "insufficient funds" in str(exc).lower():
        return f"{exc} (on a local devnet: `tessera chain fund ADDRESS 10` sends it 10 ETH from a dev account)"
    if isinstance(exc, ContractError) and exc.name in _TIMES:
        args = {k: (_utc(v) if k in ("unbondAt", "nowTs", "commitDeadline", "revealDeadline") else v)
                for k, v in exc.args_by_name.items()}
        try:
            return f"{exc.name}: " + _TIMES[exc.name].format(**args)
        except (KeyError, IndexError):
            return str(exc)
    return str(exc)


def fee_floor_early(client, model: str, fee_wei: int | None, replicas: int, max_tokens: int) -> None:
    """Refuse, before planning and probing, a fee below what even the cheapest registered nodes ask
    for every block of every replica (``JobMarket.feeFloor`` adds the verification reserve on top,
    so this is a lower bound of the floor the contract will enforce for any plan)."""
    if fee_wei is None:
        return  # the fee defaults to the plan's floor
    nodes = [n for n in client.list_nodes(model) if n.active]
    if not nodes:
        return  # planning says which blocks have no node
    num_blocks = client.get_model(model).num_blocks
    lower = replicas * num_blocks * max_tokens * min(n.price for n in nodes)
    if fee_wei < lower:
        raise JobError(f"a fee of {fee_wei} wei is below what the cheapest nodes of {model} ask: {replicas} "
                       f"replica(s) x {num_blocks} blocks x {max_tokens} tokens x {min(n.price for n in nodes)} wei "
                       f"= {lower} wei, before the verification reserve; raise --fee, or leave it out to pay the "
                       "plan's floor")
