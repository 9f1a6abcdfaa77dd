"""A whole Tessera network on this machine: anvil, contracts, a model, operator nodes.

``tessera demo`` and the end-to-end tests drive it. Every node is a real
``tessera operator run`` process talking real gRPC on 127.0.0.1; the chain is
a real anvil. :meth:`DevCluster.close` stops everything it started (also on
error: use it as a context manager).

Accounts (anvil's well-known dev keys): 0 deploys and publishes the model,
1..8 are the first nodes, 9 is the requester (10 and 11 more requesters in
``bench.load``), 12..15 the nodes past eight (funded by account 0 when registered).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w
from eth_account import Account
from web3 import Web3

from chain import devnet
from chain.client import TesseraChain
from chain.deploy import DeployParams, deploy, save_deployment
from proto.errors import TesseraError
from proto.types import Hop, NodeId, Plan, Replica
from tessera.procs import stop_processes
from worker.limits import ModelLimits
from worker.store import fetch, load_manifest
from worker.store.install import BUILTIN
from worker.tls import endpoint_fingerprint

logger = logging.getLogger(__name__)

REQUESTER = 9
FIRST_NODE = 1
MORE_NODES = 12  # account of the ninth node: after the requesters bench.load uses (9, 10, 11)
MAX_NODES = 12  # accounts 1..8 and 12..15
NODE_FUNDS_WEI = 100 * 10**18  # what account 0 sends a node account the devnet did not fund (stake + gas)


@dataclass
class NodeProc:
    index: int  # dev account index
    span: tuple[int, int]
    port: int
    config: Path
    log: Path
    byzantine: bool = False
    proc: subprocess.Popen | None = None
    address: str = ""
    lines: list[str] = field(default_factory=list)
    metrics_port: int = 0  # HTTP port of the node's /metrics and /health
    model: str = ""  # the model it serves

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class DevCluster:
    """anvil + deployment + registered model + N operator processes."""

    def __init__(self, workdir: str | Path, model: str = "smollm2-135m", spans: list[tuple[int, int]] | None = None,
                 copies: int = 3, byzantine: tuple[int, ...] = (), threads: int = 1,
                 params: DeployParams | None = None, engine: str = "anvil", tls: bool = False,
                 standby_spans: tuple[tuple[int, int], ...] = (), worker: dict | None = None, verifiers: int = 0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.spans = spans
        self.copies = copies  # nodes per span
        self.standby_spans = tuple(standby_spans)  # one more node for each of these spans (standbys for failover)
        self.worker = worker or {}  # extra [worker] settings of every node, e.g. {"hop_timeout_s": 5}
        self.byzantine = set(byzantine)  # node positions (0-based) that corrupt activations
        self.threads = threads
        self.verifiers = verifiers  # extra nodes serving every block, started last: the dispute verifier pool
        # short windows so tests can wait them out; unbonding 7200 s > a job's lifetime (1800 + 600 + 3 x 120)
        self.params = params or DeployParams(unbonding_period_s=7200, max_job_duration_s=1800, min_commit_window_s=10,
                                             min_reveal_window_s=30, attest_window_s=600, finalize_grace_s=120)
        self.engine = engine  # devnet: anvil or hardhat
        self.tls = tls  # nodes serve gRPC over TLS, their certificates' fingerprints registered with the endpoints
        self.manifests: dict = {}  # model name -> manifest, of every model registered here
        self.net: devnet.Devnet | None = None
        self.nodes: list[NodeProc] = []
        self.verifier_nodes: list[NodeProc] = []  # the full-span nodes started for ``verifiers`` (also in nodes)
        self.env = {**os.environ, "TESSERA_DEPLOYMENT": str(self.workdir / "deployment.json")}

    # ----------------------------------------------------------------- set-up
    def __enter__(self) -> "DevCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, on_step=lambda s: None) -> "DevCluster":
        on_step(f"starting {self.engine}")
        self.net = devnet.start(self.engine, log_file=self.workdir / f"{self.engine}.log")
        self.w3 = devnet_w3(self.net)
        on_step("deploying contracts")
        self.deployment = deploy(self.w3, _acct(0), self.params, rpc_url=self.net.rpc_url)
        save_deployment(self.deployment, self.workdir / "deployment.json")
        on_step(f"preparing model {self.model}")
        m = self.manifest = self.add_model(self.model)
        spans = self.spans or _halves(m.num_blocks)
        n = len(spans) * self.copies + len(self.standby_spans) + self.verifiers
        if n > MAX_NODES:
            raise TesseraError(f"{n} nodes asked for; the devnet has {MAX_NODES} node accounts")
        on_step(f"registering {n} operator nodes")
        for i in range(n):
            primaries = len(spans) * self.copies
            span = (spans[i % len(spans)] if i < primaries else
                    self.standby_spans[i - primaries] if i < n - self.verifiers else (0, m.num_blocks))
            self.nodes.append(self._register(node_account(i), span, byzantine=i in self.byzantine))
        self.verifier_nodes = self.nodes[n - self.verifiers:] if self.verifiers else []
        on_step(f"starting {n} node processes")
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_ready(node)
        return self

    def add_model(self, name: str):
        """Prepare ``name`` (a packaged model, or a stored one) and publish it on chain; its manifest."""
        m = fetch(name) if name in BUILTIN else load_manifest(name)
        self.client(0).register_model(m.name, m.num_blocks, _context_length(m), m.weights_root, m.tokenizer_hash,
                                      m.config_hash)
        self.manifests[m.name] = m
        return m

    def _register(self, index: int, span: tuple[int, int], byzantine: bool, model: str | None = None,
                  noise: float | None = None, weights: str = "fp32") -> NodeProc:
        port, metrics_port = devnet.free_port(), devnet.free_port()
        c = self.client(index)
        if index >= devnet.DEV_ACCOUNTS:
            devnet.fund(self.w3, c.address, NODE_FUNDS_WEI)
        model = model or self.model
        tls_dir = self.workdir / f"node{index}-tls"
        endpoint = f"127.0.0.1:{port}" + (f"#tls={endpoint_fingerprint(tls_dir)}" if self.tls else "")
        c.register_node(model, span[0], span[1], endpoint, 10**18, throughput=2000, price_per_block=10**9)
        cfg = self.workdir / f"node{index}.toml"
        cfg.write_text(tomli_w.dumps({
            "node": {"rpc_url": self.net.rpc_url, "deployment": str(self.workdir / "deployment.json"),
                     "dev_account": index, "state_dir": str(self.workdir / f"node{index}"),
                     "poll_interval_s": 0.3, "retry_backoff_s": 0.5},
            "worker": {"model": model, "start": span[0], "end": span[1], "port": port,
                       "metrics_port": metrics_port, "threads": self.threads, "byzantine": byzantine,
                       "tls": self.tls, "tls_dir": str(tls_dir), "weights": weights,
                       **({} if noise is None else {"byzantine_noise": noise}),
                       # a node that runs int8 weights while it advertises exact ones cheats on purpose:
                       # byzantine (with no noise unless asked) skips the start-up check that would stop it
                       **({"byzantine": True, "byzantine_noise": noise or 0.0} if weights != "fp32" else {}),
                       **self.worker},
        }))
        return NodeProc(index, span, port, cfg, self.workdir / f"node{index}.log", byzantine, address=c.address,
                        metrics_port=metrics_port, model=model)

    # ------------------------------------------------------------------ nodes
    def add_node(self, span: tuple[int, int], byzantine: bool = False, model: str | None = None,
                 wait: bool = True, noise: float | None = None, weights: str = "fp32") -> NodeProc:
        """Register and start one more node (next free dev account) serving ``span`` of ``model``
        (the cluster's model unless given; another one must be added with :meth:`add_model` first).
        ``byzantine``: it perturbs what it sends by Gaussian noise of std ``noise``
        (WorkerConfig.byzantine_noise by default); ``weights``: what it really runs, whatever it
        advertises (``int8-mixed`` on an exact job is cheating)."""
        if len(self.nodes) >= MAX_NODES:
            raise TesseraError(f"the devnet has {MAX_NODES} node accounts, all in use")
        index = node_account(len(self.nodes))
        node = self._register(index, span, byzantine, model, noise, weights)
        self.nodes.append(node)
        self.start_node(node, wait)
        return node

    def plan(self, *replicas: "list[NodeProc]", standbys: "list[list[NodeProc]] | None" = None) -> Plan:
        """A plan whose replicas are the given chains of nodes (each hop = the node's span);
        ``standbys[r]``: nodes that back replica r's primary of the same span."""
        standbys = standbys or [[] for _ in replicas]
        return Plan(self.model, self.manifest.num_blocks,
                    tuple(Replica(tuple(Hop(NodeId(n.address), *n.span) for n in rep),
                                  tuple(Hop(NodeId(n.address), *n.span) for n in sb))
                          for rep, sb in zip(replicas, standbys, strict=True)))

    def start_node(self, node: NodeProc, wait: bool = True) -> None:
        log = open(node.log, "ab")
        node.proc = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", "operator", "run", "--config",
                                      str(node.config)], stdout=subprocess.PIPE, stderr=log,
                                     stdin=subprocess.DEVNULL, env=self.env, start_new_session=True, text=True)
        node.lines = []
        threading.Thread(target=_pump, args=(node,), daemon=True).start()
        if wait:
            self.wait_ready(node)

    def wait_ready(self, node: NodeProc, timeout_s: float = 180.0) -> None:
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
            if any(line.startswith("READY") for line in node.lines):
                return
            if not node.alive:
                raise TesseraError(f"node {node.index} exited with code {node.proc.returncode}; see {node.log}")
            time.sleep(0.1)
        raise TesseraError(f"node {node.index} was not ready within {timeout_s:.0f} s; see {node.log}")

    def pause_node(self, node: NodeProc) -> None:
        """SIGSTOP the node: it holds its connections and answers nothing (a stalled peer)."""
        if node.alive:
            os.killpg(node.proc.pid, signal.SIGSTOP)

    def resume_node(self, node: NodeProc) -> None:
        if node.alive:
            os.killpg(node.proc.pid, signal.SIGCONT)

    def kill_node(self, node: NodeProc) -> None:
        if node.alive:
            node.proc.kill()
            node.proc.wait(10)

    def stop_node(self, node: NodeProc, timeout_s: float = 10.0) -> None:
        if node.proc is not None:
            self.resume_node(node)  # a stalled node would not see SIGTERM
            stop_processes([node.proc], timeout_s)

    def node_by_address(self, address: str) -> NodeProc:
        return next(n for n in self.nodes if n.address.lower() == address.lower())

    # ---------------------------------------------------------------- clients
    def client(self, index: int = REQUESTER) -> TesseraChain:
        return TesseraChain(self.w3, self.deployment, _acct(index))

    def close(self) -> None:
        """Stop every node at once (each gets SIGTERM, then SIGKILL after 5 s), then the devnet."""
        try:
            for node in self.nodes:
                self.resume_node(node)  # a stalled node would not see SIGTERM
            stop_processes([n.proc for n in self.nodes if n.proc is not None], timeout_s=5)
        except Exception:  # noqa: BLE001 - the devnet must stop too
            logger.exception("stopping the nodes")
        if self.net is not None:
            devnet.stop_anvil(self.net)
            self.net = None


def node_account(position: int) -> int:
    """The dev account of the cluster's ``position``-th node (0-based)."""
    before = REQUESTER - FIRST_NODE  # node accounts below the requester's
    return FIRST_NODE + position if position < before else MORE_NODES + position - before


def _pump(node: NodeProc) -> None:
    for line in node.proc.stdout:
        node.lines.append(line.rstrip("\n"))


def _context_length(m) -> int:
    """What the model attends over (1 for a classifier), as registered with it."""
    return 1 if m.kind == "classifier" else ModelLimits.of(m.directory).context or 2048


def _halves(num_blocks: int) -> list[tuple[int, int]]:
    mid = num_blocks // 2
    return [(0, mid), (mid, num_blocks)] if num_blocks > 1 else [(0, num_blocks)]


def _acct(index: int):
    return Account.from_key(devnet.dev_key(index))


def devnet_w3(net: devnet.Devnet):
    return Web3(Web3.HTTPProvider(net.rpc_url, request_kwargs={"timeout": 30}))
