"""The verifier role of a full-span node: judge the disputes it is drawn for, and attest.

On ``VerifiersDrawn`` naming this node, for each replica of the job: read its
reveal (output, receipts root, served mask) from chain, fetch its signed
receipts from the node that revealed it (``GetReceipts``), check them against
the revealed root and the served route, and re-execute the output teacher-forced
(:class:`worker.verify.reexec.Verifier`) to name the first faulty hop; then
``attest`` one verdict per replica before the attest deadline. A replica
that revealed nothing is unknown (0); a tail that does not hand over receipts
matching its root before :data:`FETCH_FOR_S` runs out is the faulty hop
(its commitment is the evidence). Only a node serving every block verifies:
the contract draws from that pool, and only such a node can re-execute.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from chain.client import TesseraChain
from chain.records import JobRequest, Reveal
from proto.errors import ContractError, ProtocolError, TesseraError
from proto.tessera.v1 import worker_pb2 as pb
from proto.tessera.v1 import worker_pb2_grpc as pb_grpc
from proto.types import DType, Hop, WeightsMode, decode_output
from worker import wire
from worker.node.chainview import ChainPlanView
from worker.node.payload import head_inputs
from worker.verify.reexec import Verifier
from worker.verify.signed import SignedReceipt, check_replica
from worker.verify.spec import ExecSpec, Verdict

logger = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 10.0  # one GetReceipts call, seconds
FETCH_FOR_S = 60.0  # how long a tail may take to hand over its receipts before it is judged withholding, seconds
ATTEST_MARGIN_S = 5.0  # attest at least this long before the deadline (block time and gas estimation), seconds
DTYPES = {DType.FP32: "fp32", DType.BF16: "bf16", DType.FP16: "fp16"}
WEIGHTS = {WeightsMode.EXACT: "fp32", WeightsMode.INT8_MIXED: "int8-mixed"}


class VerifierRole:
    """Judges and attests the disputes this node is drawn for, one at a time."""

    def __init__(self, chain: TesseraChain, view: ChainPlanView, model_dir: Path, me: str, stop: threading.Event,
                 device: str = "cpu"):
        self.chain, self.view, self.model_dir, self.me, self.stop, self.device = chain, view, model_dir, me, stop, device
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verifier")
        self._verifiers: dict[str, Verifier] = {}  # weights -> the whole model, one stage per block
        self._seen: set[int] = set()

    def preload(self) -> None:
        """Load the fp32 verifier in the background (a first dispute then waits for nothing)."""
        self._pool.submit(self._verifier, "fp32")

    def on_drawn(self, job_id: int, verifiers, deadline: int) -> None:
        """A ``VerifiersDrawn`` event: queue the job if it names this node."""
        if self.me.lower() not in (v.lower() for v in verifiers) or job_id in self._seen:
            return
        self._seen.add(job_id)
        logger.info("job %s: drawn as a verifier; attesting before %s", job_id, deadline)
        self._pool.submit(self._run, job_id, deadline)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ work
    def _verifier(self, weights: str) -> Verifier:
        if weights not in self._verifiers:
            self._verifiers[weights] = Verifier(self.model_dir, weights, self.device)
        return self._verifiers[weights]

    def _run(self, job_id: int, deadline: int) -> None:
        try:
            verdicts = self.judge(job_id, deadline)
            if self.chain.w3.eth.get_block("latest")["timestamp"] > deadline:
                logger.warning("job %s: verdicts %s came after the attest deadline; not attesting", job_id, verdicts)
                return
            self.chain.attest(job_id, [v.code for v in verdicts])
            logger.info("job %s: attested %s", job_id, "; ".join(
                f"replica {r}: {v.status}{'' if v.hop is None else f' at hop {v.hop}'} ({v.reason})"
                for r, v in enumerate(verdicts)))
        except ContractError as exc:
            logger.warning("job %s: attest refused: %s", job_id, exc)
        except Exception:  # noqa: BLE001 - one job's failure must not stop the role
            logger.exception("job %s: verification failed; not attesting", job_id)

    def judge(self, job_id: int, deadline: int) -> list[Verdict]:
        """One verdict per replica of ``job_id``."""
        req = self.view.request(job_id)
        route = self.view.route(job_id)
        reveals = self.chain.reveals(job_id)
        spec = ExecSpec(route.params, DTYPES[req.spec.dtype], WEIGHTS[req.spec.weights])
        prompt = head_inputs(route.kind, self.model_dir, req.input, req.max_tokens)
        verifier = self._verifier(spec.weights)
        give_up = min(time.time() + FETCH_FOR_S, deadline - ATTEST_MARGIN_S - 30)
        plan = req.plan(route.model, route.num_blocks)
        return [self._replica(req, r, tuple(h for h, _standby in rep.words()), reveals.get(r), spec, prompt,
                              verifier, give_up) for r, rep in enumerate(plan.replicas)]

    def _replica(self, req: JobRequest, r: int, words: tuple[Hop, ...], reveal: Reveal | None, spec: ExecSpec,
                 prompt, verifier: Verifier, give_up: float) -> Verdict:
        """``words``: the replica's hop words in packed order (primaries, each followed by its standbys),
        which the revealed served mask picks the served route from (a standby names the node that served)."""
        if reveal is None:
            return Verdict("unknown", reason="revealed nothing")
        served = [h for i, h in enumerate(words) if reveal.served_mask >> i & 1]
        if not served:
            return Verdict("unknown", reason="the reveal names no served hop")
        tail = len(served) - 1
        try:
            tokens = decode_output(reveal.output)
        except (TesseraError, ValueError) as exc:
            return Verdict("faulty", tail, f"revealed output is not a token list: {exc}")
        signed = self._fetch(int(req.job_id), r, served[-1], give_up)
        if signed is None:
            return Verdict("faulty", tail, "the tail did not hand over its receipts")
        try:
            root = check_replica(signed, served, int(req.job_id), r, reveal.output_hash, len(tokens),
                                 self.view.domain)
        except ProtocolError as exc:
            return Verdict("faulty", tail, f"the tail's receipts do not hold: {exc}")
        if root != reveal.receipts_root:
            return Verdict("faulty", tail, "the tail's receipts are not the ones it committed")
        report = verifier.verify(spec, prompt, tokens, served, [s.receipt for s in signed], int(req.job_id), r)
        logger.info("job %s replica %d: %s in %.2f s (%s)", req.job_id, r, report.verdict.status, report.seconds,
                    report.verdict.reason)
        return report.verdict

    def _fetch(self, job_id: int, replica: int, tail: Hop, give_up: float) -> list[SignedReceipt] | None:
        """The replica's receipts from its tail, retried until ``give_up`` (unix seconds); None if withheld."""
        backoff = 0.5
        while not self.stop.is_set():
            try:
                rec = self.chain.get_node(tail.node)
                if rec is None:
                    raise ProtocolError(f"tail {tail.node} is not registered")
                with grpc.insecure_channel(rec.endpoint, options=[
                        ("grpc.max_receive_message_length", wire.MAX_RECEIPTS * (wire.MAX_RECEIPT_BYTES + 128))]) as ch:
                    resp = pb_grpc.WorkerServiceStub(ch).GetReceipts(
                        pb.ReceiptsRequest(job_id=str(job_id), replica=replica), timeout=FETCH_TIMEOUT_S)
                wire.check_receipts(resp.receipts, f"job {job_id} replica {replica}")
                return [SignedReceipt.from_pb(m) for m in resp.receipts]
            except (grpc.RpcError, TesseraError) as exc:
                msg = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
                if time.time() + backoff > give_up:
                    logger.warning("job %s replica %d: no receipts from %s: %s", job_id, replica, tail.node, msg)
                    return None
                logger.info("job %s replica %d: receipts not yet from %s (%s); retrying", job_id, replica, tail.node,
                            msg)
                self.stop.wait(backoff)
                backoff = min(2 * backoff, 8.0)
        return None

