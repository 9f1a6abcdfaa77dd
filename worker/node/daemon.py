"""NodeDaemon: an operator's node on chain.

Start-up: connect, check the node is registered for the configured span,
verify the local weights against the ModelRegistry, load the stage, serve
gRPC, then follow JobMarket events from a persisted cursor.

Per job the node is planned in (all state in :class:`JobBook`):

1. ``JobSubmitted`` -> the job is written to the book (before the cursor
   moves past the event, so a crash cannot lose it); as the head of a replica
   the node runs the replica (``worker.ring.run_replica``), retrying while the
   commit window is open.
2. As a tail (or the tail's standby, after a failover), the output arrives
   through ``on_output`` with the route that served it and the replica's signed
   hop receipts (checked by the ring); the salt is drawn and output, salt, route
   and receipts saved, then the commitment over the output, the receipts root and
   the route as servedMask is sent -- unless the job's reveal window leaves
   less than ``reveal_margin_s`` to reveal in, then the node refuses and says
   why: a commitment it may not be able to open would be slashed.
3. Once every replica committed (or the commit window closed) the tail
   reveals; once every replica revealed (or the reveal window closed) it
   finalizes; a disputed job's verifiers are drawn and its dispute finalized
   after the attestations. A node serving every block also verifies the
   disputes the contract draws it for (:mod:`worker.node.verifier`). Earnings are withdrawn with ``tessera operator withdraw``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from chain.client import TesseraChain
from chain.clock import ChainClock
from chain.connect import make_web3, resolve_account
from chain.deploy import load_deployment
from chain.events import EventFollower
from chain.records import DisputeState, JobDisputed, JobRequest, JobSettlement
from proto.endpoint import Endpoint
from proto.errors import ConfigError, ContractError, JobInputError, ProtocolError, TesseraError
from worker import server
from worker.config import WorkerConfig
from worker.node.book import JobBook, JobEntry
from worker.node.chainview import ChainPlanView
from worker.node.config import NodeConfig, check_weights_caps
from worker.node.health import HealthServer, NodeMetrics
from worker.node.payload import head_inputs
from worker.node.state import ChainIdentity, claim, lock
from worker.node.verifier import VerifierRole
from worker.ring import run_replica
from worker.signing import Signer
from worker.store import load_manifest, resolve, verify_metadata, verify_span
from worker.stream import TokenSigner
from worker.tls import endpoint_fingerprint
from worker.verify.receipt import receipts_root
from worker.verify.signed import SignedReceipt, pack, unpack

logger = logging.getLogger(__name__)

STATUS_CHECK_S = 5.0  # how often the node re-reads its own record on chain, seconds


def _utc(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class NodeDaemon:
    def __init__(self, node: NodeConfig, worker: WorkerConfig):
        self.cfg, self.wcfg = node, worker
        self.stop_event = threading.Event()
        # heads run at once up to the sessions the node holds: their decode steps batch (worker.scheduler)
        self._pool = ThreadPoolExecutor(max_workers=worker.max_sessions, thread_name_prefix="head")
        self._tick_lock = threading.Lock()
        self.finished = threading.Event()  # set when the node stops by itself (unbonded); see exit_reason
        self.exit_reason = ""
        self.metrics = NodeMetrics()
        self.health: HealthServer | None = None
        self._status, self._checked = "active", 0.0

    # ---------------------------------------------------------------- start-up
    def start(self) -> int:
        """Connect, verify, load and serve; returns the gRPC port."""
        account = resolve_account(self.cfg.key, self.cfg.dev_account)
        logger.info("node %s: connecting to the chain", account.address)
        w3 = make_web3(self.cfg.rpc_url)
        self.deployment = load_deployment(self.cfg.deployment)
        self.chain = TesseraChain(w3, self.deployment, account)
        self.me = account.address
        self.clock = ChainClock(w3)
        rec = self.chain.get_node()
        self.model_dir = resolve(self.wcfg.model_dir or self.wcfg.model)
        self.manifest = load_manifest(self.model_dir)
        end = self.wcfg.end if self.wcfg.end is not None else self.manifest.num_blocks
        nb = self.manifest.num_blocks
        if not 0 <= self.wcfg.start < end <= nb:
            raise ConfigError(f"[worker] start = {self.wcfg.start}, end = {end} is not a span of {self.manifest.name}, "
                              f"which has {nb} blocks: use 0 <= start < end <= {nb} (half-open), e.g. start = 0, "
                              f"end = {nb}")
        if rec is None or not rec.active:
            raise ConfigError(f"node {self.me} is not an active node; register it first with "
                              f"`tessera operator register --model {self.manifest.name} --blocks "
                              f"{self.wcfg.start}:{end} ...`")
        model = self.chain.get_model(rec.model_id)  # the registered model: its publisher and name
        if model.name != self.manifest.name or not rec.start <= self.wcfg.start < end <= rec.end:
            raise ConfigError(f"node {self.me} is registered for blocks [{rec.start}, {rec.end}) of {model.ref}, "
                              f"not [{self.wcfg.start}, {end}) of {self.manifest.name}; serve what it registered "
                              "or register again")
        if not self.wcfg.byzantine:  # a byzantine node (tests, demos) cheats on purpose
            check_weights_caps(self.wcfg.weights, rec.caps, self.me)
        self.model_id = rec.model_id
        check_endpoint(rec.endpoint, self.wcfg.port,
                       endpoint_fingerprint(self.wcfg.tls_path(self.me)) if self.wcfg.tls else None)
        logger.info("node %s: active on chain %d for %s [%d, %d), endpoint %s", self.me, self.deployment.chain_id,
                    model.ref, rec.start, rec.end, rec.endpoint)
        if self.cfg.verify_weights:
            logger.info("verifying the weights of blocks [%d, %d) against the ModelRegistry root", self.wcfg.start, end)
            verify_span(self.manifest, self.wcfg.start, end, model.weights_root)
        verify_metadata(self.manifest, model.tokenizer_hash, model.config_hash)  # cheap: always
        self.wcfg = self.wcfg.model_copy(update={"end": end, "model_dir": str(self.model_dir)})
        ident = ChainIdentity.of(w3, self.deployment)
        state_dir = self.cfg.state_path(self.me, ident.key)
        claim(state_dir, ident)
        self._lock_file = lock(state_dir)
        self.book = JobBook(state_dir)
        self.view = ChainPlanView(self.chain, self.manifest, self.model_dir, self.model_id)
        self.signer = Signer(account.key)
        if self.wcfg.metrics:
            self.health = HealthServer(self.metrics, self.wcfg.host, self.wcfg.http_port(self.wcfg.port),
                                       refresh=self._refresh_gauges)
            self.health.set(node=self.me, model=self.manifest.name, start=self.wcfg.start, end=end,
                            endpoint=rec.endpoint)
            logger.info("metrics and health on http://%s:%d/metrics and /health", self.wcfg.host, self.health.port)
        logger.info("loading blocks [%d, %d) of %s on %s", self.wcfg.start, end, self.manifest.name, self.wcfg.device)
        self.running = server.serve(self.wcfg, self.view, on_output=self._on_output, signer=self.signer)
        self.running.tokens.signer = TokenSigner(account.key)
        self.running.runtime.receipts = self._receipts_of
        self.verifier: VerifierRole | None = None
        if rec.start == 0 and rec.end == nb and self.wcfg.start == 0 and end == nb and self.manifest.kind == "causal-lm":
            self.verifier = VerifierRole(self.chain, self.view, self.model_dir, self.me, self.stop_event,
                                         self.wcfg.device)
            self.verifier.preload()
            logger.info("node %s serves every block: it verifies the disputes it is drawn for", self.me)
        self.follower = EventFollower(w3, [self.chain.market, self.chain.disputes], state_dir / "cursor.json",
                                      self.deployment.block, names=["JobSubmitted", "VerifiersDrawn"], confirmations=self.cfg.confirmations,
                                      ws_url=self.cfg.ws_url)
        for job in self.book.open_jobs():  # resume what a previous run left
            self._launch_heads(job)
        threading.Thread(target=self.follower.follow, args=(self._on_event, self.stop_event,
                                                             self.cfg.poll_interval_s), daemon=True,
                         name="follower").start()
        threading.Thread(target=self._tick_loop, daemon=True, name="settle").start()
        logger.info("node %s serves %s [%d, %d) on port %d", self.me, self.manifest.name, self.wcfg.start, end,
                    self.running.port)
        if self.health:
            self.health.set(status="ready", reason="", grpc_port=self.running.port)
        return self.running.port

    def stop(self) -> None:
        self.stop_event.set()
        if self.health:
            self.health.set(status="stopping", reason="stopped by its operator")
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.verifier is not None:
            self.verifier.close()
        self.running.stop(0.5)
        if self.health:
            self.health.close()

    # ------------------------------------------------------------- own status
    def _refresh_gauges(self) -> None:
        rt = self.running.runtime if getattr(self, "running", None) else None
        if rt is not None:
            self.metrics.sessions.set(len(rt.sessions))
            self.metrics.tps.set(rt.tokens_per_second)
        if getattr(self, "book", None) is not None:
            self.metrics.open_jobs.set(len(self.book.open_jobs()))

    def _check_status(self) -> None:
        """Re-read this node's record; once it is no longer active, say so, finish the open
        jobs (their commits and reveals still count) and stop."""
        if time.monotonic() - self._checked < STATUS_CHECK_S:
            return
        self._checked = time.monotonic()
        rec = self.chain.get_node()
        self.metrics.block.set(self.chain.w3.eth.block_number)
        status = rec.status if rec else "exited"
        if rec:
            self.metrics.stake.set(rec.stake)
            self.metrics.earnings.set(rec.earnings)
            self.metrics.reputation.set(rec.reputation)
        self.metrics.active.set(1 if status == "active" else 0)
        if status == "active":
            return
        left = len(self.book.open_jobs())
        if status != self._status:
            self._status = status
            when = f"; its stake is withdrawable from {_utc(rec.unbond_at)}" if rec and rec.unbond_at else ""
            self.exit_reason = (f"node {self.me} is {status} on chain{when}: it gets no new jobs, so this "
                                "daemon stops once its open jobs are settled")
            logger.warning("%s (%d open)", self.exit_reason, left)
            if self.health:
                self.health.set(status=status, reason=self.exit_reason)
        if left == 0:
            self.finished.set()

    # ------------------------------------------------------------------ events
    def _on_event(self, ev) -> None:
        if ev.name == "VerifiersDrawn":
            if self.verifier is not None:
                self.verifier.on_drawn(int(ev.args["jobId"]), ev.args["verifiers"], int(ev.args["attestDeadline"]))
            return
        req = JobRequest.from_event(ev.args, ev.block)
        if req.model_id != self.model_id:
            return
        self.view.add_request(req)
        self._admit(req, ev.tx_hash)

    def _admit(self, req, tx: str = "") -> JobEntry | None:
        """Write a job this node is planned in to the ledger (and start the replicas it
        heads) the first time it is seen; returns its entry, None if not planned.

        Called from the event follower and from ``_on_output``: a tail can finish a
        replica before its own follower has seen the job's event."""
        route = self.view.route(req.job_id)
        words = [route.plan_words(r) for r in range(len(route.replicas))]
        roles = tuple((r, i) for r, ws in enumerate(words) for i, (h, _) in enumerate(ws)
                      if h.node.lower() == self.me.lower())
        if not roles:
            return None
        tails = tuple(r for r, i in roles if words[r][i][0].end == route.num_blocks)
        entry = JobEntry(int(req.job_id), roles, tails, req.commit_deadline, req.reveal_deadline, note="planned",
                         tx=tx)
        old = self.book.get(req.job_id)
        if old is not None and tx and old.tx and old.tx != tx:
            if old.committed:
                logger.error("job %s: a reorg replaced it after this node committed; keeping the old entry",
                             req.job_id)
                return old
            logger.warning("job %s: a reorg replaced it (tx %s -> %s); planning it again", req.job_id, old.tx, tx)
            self.book.replace(entry)
            self._launch_heads(entry)
        elif self.book.add(entry):
            self.metrics.jobs.inc()
            logger.info("job %s: planned as %s", req.job_id, ", ".join(f"replica {r} hop {i}" for r, i in roles))
            self._launch_heads(entry)
        return self.book.get(req.job_id)

    def _launch_heads(self, job: JobEntry) -> None:
        for r in job.heads:
            if r not in job.head_done:
                self._pool.submit(self._run_head, job.job_id, r)

    def _run_head(self, job_id: int, replica: int) -> None:
        req = self.view.request(job_id)
        route = self.view.route(job_id)
        backoff = self.cfg.retry_backoff_s
        tokens = self.running.tokens
        for attempt in range(1, self.cfg.head_retries + 1):
            if self.stop_event.is_set() or self._now() > req.commit_deadline:
                break
            try:
                inputs = head_inputs(route.kind, self.model_dir, req.input, req.max_tokens)
                head = route.hop(replica, 0)
                stage = self.running.runtime.stages.get(head.start, head.end)
                tokens.begin(job_id, replica)
                ids = run_replica(stage, route, replica, inputs, self.signer, config=self.wcfg,
                                  on_output=self._on_output, channels=self.running.runtime.channels,
                                  on_token=lambda _step, new: self._on_token(job_id, replica, new))
                tokens.finish(job_id, replica)
                job = self.book.get(job_id)
                self.book.update(job_id, head_done=job.head_done + (replica,), note=f"ran replica {replica}")
                self.metrics.heads.labels("done").inc()
                logger.info("job %s replica %s: head done, %d ids", job_id, replica, len(ids))
                return
            except JobInputError as exc:
                tokens.finish(job_id, replica, f"input refused: {exc}")
                logger.warning("job %s replica %s: input refused, not retrying: %s", job_id, replica, exc)
                self.book.update(job_id, note=f"replica {replica}: input refused: {exc}")
                self.metrics.heads.labels("input_refused").inc()
                return
            except (TesseraError, grpc.RpcError) as exc:
                msg = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
                tokens.finish(job_id, replica, f"attempt {attempt} failed: {msg}")
                logger.warning("job %s replica %s: attempt %d failed: %s", job_id, replica, attempt, msg)
                self.metrics.heads.labels("retry").inc()
                self.stop_event.wait(backoff)
                backoff = min(2 * backoff, 30.0)
        self.book.update(job_id, note=f"replica {replica} could not run")
        self.metrics.heads.labels("failed").inc()

    def _on_token(self, job_id: int, replica: int, ids) -> None:
        self.running.tokens.publish(job_id, replica, ids)
        self.metrics.tokens.inc(len(ids))

    def _on_output(self, job_id: int, replica: int, output: bytes, mask: int = 0,
                   receipts: tuple[SignedReceipt, ...] = ()) -> None:
        """The tail's output, the route that served it (servedMask; 0 = the primaries) and the replica's
        signed receipts: saved with a fresh salt; the settle loop commits them."""
        job = self.book.get(job_id) or self._admit(self.view.request(job_id))
        if job is None or replica not in job.tails or str(replica) in job.outputs:
            return
        self.book.update(job_id, outputs={**job.outputs, str(replica): output.hex()},
                         salts={**job.salts, str(replica): secrets.token_hex(32)},
                         masks={**job.masks, str(replica): mask},
                         receipts={**job.receipts, str(replica): [pack(r).hex() for r in receipts]},
                         note="output ready")

    def _receipts_of(self, job_id: int, replica: int) -> tuple[SignedReceipt, ...]:
        """GetReceipts: a replica this node committed, once it is revealed on chain (before that its
        receipts would tell other replicas what to commit)."""
        job = self.book.get(job_id)
        if job is None or str(replica) not in job.receipts or replica not in job.committed:
            raise ProtocolError(f"this node committed no replica {replica} of job {job_id}")
        if not self.chain.get_job(job_id).revealed_mask >> replica & 1:
            raise ProtocolError(f"job {job_id} replica {replica} is not revealed yet; receipts are handed out "
                                "after the reveal")
        return tuple(unpack(bytes.fromhex(h)) for h in job.receipts[str(replica)])

    # -------------------------------------------------------------- settlement
    def _now(self) -> int:
        return self.clock.now()

    def _tick_loop(self) -> None:
        while not self.stop_event.wait(self.cfg.poll_interval_s):
            try:
                self._check_status()
            except Exception:  # noqa: BLE001 - a failed status read is retried on the next tick
                logger.exception("reading this node's record on chain failed; will retry")
            for job in self.book.open_jobs():
                try:
                    self._settle(job)
                except ContractError as exc:
                    logger.warning("job %s: %s", job.job_id, exc)
                except Exception:  # noqa: BLE001 - one job's trouble must not stop the others
                    logger.exception("job %s: settlement step failed; will retry", job.job_id)

    def _settle(self, job: JobEntry) -> None:
        try:
            state = self.chain.get_job(job.job_id)
        except ContractError as exc:
            if exc.name != "JobUnknown":
                raise
            self.book.update(job.job_id, closed=True, note="no longer on chain (removed by a reorg)")
            logger.warning("job %s: no longer on chain (a reorg removed it); dropped", job.job_id)
            return
        everyone = (1 << state.num_replicas) - 1
        now = self._now()
        if state.status == "finalized":
            self.book.update(job.job_id, closed=True, note="finalized")
            return
        if state.status in ("disputed", "attesting"):
            if job.tails and self.cfg.finalize:
                self._push_dispute(job, state)
            return
        for r in job.tails:
            out, salt = job.outputs.get(str(r)), job.salts.get(str(r))
            if out is None:
                continue
            out, salt = bytes.fromhex(out), bytes.fromhex(salt)
            if r not in job.committed and not state.committed_mask >> r & 1:
                if now > job.commit_deadline or not self._may_commit(job, r, now):
                    continue
                self.chain.commit(job.job_id, r, out, salt, self._root(job, r),
                                  served_mask=job.masks.get(str(r)) or None)
                self.metrics.chain_tx.labels("commit").inc()
                job = self.book.update(job.job_id, committed=job.committed + (r,), note=f"committed replica {r}")
                logger.info("job %s replica %s: committed", job.job_id, r)
                state = self.chain.get_job(job.job_id)
            reveal_open = state.committed_mask == everyone or now > job.commit_deadline
            if r not in job.revealed and not state.revealed_mask >> r & 1 and reveal_open \
                    and now <= job.reveal_deadline and state.committed_mask >> r & 1:
                self.chain.reveal(job.job_id, r, out, salt, self._root(job, r),
                                  served_mask=job.masks.get(str(r)) or None)
                self.metrics.chain_tx.labels("reveal").inc()
                job = self.book.update(job.job_id, revealed=job.revealed + (r,), note=f"revealed replica {r}")
                logger.info("job %s replica %s: revealed", job.job_id, r)
                state = self.chain.get_job(job.job_id)
        if job.tails and self.cfg.finalize and (state.revealed_mask == everyone or now > job.reveal_deadline):
            try:
                out = self.chain.finalize(job.job_id)
                self.metrics.chain_tx.labels("finalize").inc()
                logger.info("job %s: %s", job.job_id, _describe(out))
            except ContractError as exc:
                if exc.name not in ("JobAlreadyFinalized", "JobSeedNotReady"):
                    raise
        elif not job.tails and now > job.reveal_deadline:
            self.book.update(job.job_id, closed=True, note="past deadlines")

    @staticmethod
    def _root(job: JobEntry, replica: int) -> bytes:
        """The receipts root committed for ``replica`` (zero for a classifier, which keeps no receipts)."""
        signed = [unpack(bytes.fromhex(h)) for h in job.receipts.get(str(replica), ())]
        return receipts_root([s.receipt for s in signed]) if signed else bytes(32)

    def _may_commit(self, job: JobEntry, replica: int, now: int) -> bool:
        """Whether the reveal window leaves time to open a commitment: reveals may open only at the
        commit deadline (if another replica never commits), so that is the worst case."""
        left = job.reveal_deadline - max(now, job.commit_deadline)
        if left >= self.cfg.reveal_margin_s:
            return True
        note = (f"replica {replica}: refused to commit: the reveal window leaves {left} s after the commit "
                f"deadline, less than reveal_margin_s = {self.cfg.reveal_margin_s:g} s; a commitment it could "
                "not reveal in time would be slashed")
        if job.note != note:
            logger.warning("job %s %s", job.job_id, note)
            self.book.update(job.job_id, note=note)
        return False

    def _push_dispute(self, job: JobEntry, state) -> None:
        """A disputed job: draw its verifiers once the seed block is mined; finalize it once the
        attestations are in or their deadline passed (anyone may; the tails do it)."""
        try:
            if state.status == "disputed" and self.chain.w3.eth.block_number >= state.seed_block:
                logger.info("job %s: %s", job.job_id, _describe(self.chain.draw_verifiers(job.job_id)))
            elif state.status == "attesting" and (self._now() > state.stage_deadline
                                                  or self.chain.dispute_state(job.job_id).all_attested):
                logger.info("job %s: %s", job.job_id, _describe(self.chain.finalize(job.job_id)))
        except ContractError as exc:
            if exc.name not in ("JobAlreadyFinalized", "JobSeedNotReady", "JobNotDisputed", "DisputeStillOpen",
                                "DisputeNotOpen"):
                raise


def check_endpoint(registered: str, port: int, tls_fingerprint: str | None = None) -> None:
    """Refuse to serve on a port other than the one the node registered, or with other transport
    security: the router and the other hops dial the registered endpoint, and over TLS they accept only
    the certificate whose fingerprint it carries (an endpoint changes only by registering anew).
    ``tls_fingerprint``: this node's certificate fingerprint when it serves TLS, else None."""
    ep = Endpoint.parse(registered)
    if ep.fingerprint != tls_fingerprint:
        if tls_fingerprint is None:
            raise ConfigError(f"this node is registered with TLS endpoint {registered}, but this daemon would serve "
                              "plaintext gRPC; set [worker] tls = true (and the tls_dir holding that certificate)")
        if ep.fingerprint is None:
            raise ConfigError(f"this node serves TLS but is registered with plaintext endpoint {registered}; peers "
                              "would fail to connect. Set [worker] tls = false, or register anew with --tls")
        raise ConfigError(f"this node's certificate has fingerprint {tls_fingerprint[:16]}.., but it is registered "
                          f"with {ep.fingerprint[:16]}..; point [worker] tls_dir at the registered certificate, or "
                          "register anew with --tls")
    _host, _, reg_port = ep.address.rpartition(":")
    if port and reg_port.isdigit() and int(reg_port) != port:
        raise ConfigError(f"this node is registered with endpoint {registered}, but this daemon would serve "
                          f"port {port}; serve the registered port (`--port {reg_port}` or [worker] port = "
                          f"{reg_port}) — changing an endpoint takes `tessera operator unbond` and a new registration")


def _describe(out) -> str:
    """One log line for what finalize or drawVerifiers did."""
    if isinstance(out, JobSettlement):
        return f"finalized: {out.outcome}, paid replicas {list(out.paid_replicas)}"
    if isinstance(out, JobDisputed):
        return f"disputed ({out.reason}); verifiers are drawn from block {out.seed_block}"
    if isinstance(out, DisputeState):
        return f"verifiers drawn: {', '.join(out.verifiers) or 'none yet (seed re-armed)'}"
    return "moved on"
