"""The requester's side of a job, in one place: plan, check, submit, follow, settle, read.

    res = run_job(client, JobSpec("smollm2-135m", b"The capital of France is", fee_wei=10**16),
                  on_progress=lambda u: print(u))
    res.text, res.winners, res.payouts, res.refund, res.replicas()

``tessera job``, ``tessera demo`` and the end-to-end tests go through :func:`run_job` (or
its parts). The fee is checked against what the planned nodes ask (the contract's
``feeFloor``) before anything is escrowed. Who was paid or slashed, and for how much, is read
from the chain's ``JobFinalized`` (and ``DisputeSettled``) events, never recomputed here. The
output travels in the reveal's calldata, so a requester needs nothing but a chain connection.
A job whose replicas disagree goes to verifiers drawn by the contract; :func:`follow` pushes
it through (drawing the verifiers, finalizing after the attestations) like any keeper.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from chain.client import TesseraChain
from chain.clock import ChainClock
from chain.records import JobSettlement, replicas_in
from proto.errors import ContractError, JobError, ModelError
from proto.types import ExecSpec, JobId, Plan
from router.plan import plan_replicas
from router.source import Source, client_source
from router.types import Mode, Weights
from tessera.jobresult import JobResult
from tessera.units import fmt_eth

logger = logging.getLogger(__name__)

WAIT_MARGIN_S = 60.0  # how long past a job's windows (and a dispute's) `run_job` waits before giving up
MOVED_ON = ("JobAlreadyFinalized", "JobNotFinalizable", "JobSeedNotReady", "JobAwaitingVerifiers", "JobNotDisputed",
            "DisputeStillOpen", "DisputeNotOpen")  # someone else moved the job, or it is not time yet


@dataclass(frozen=True)
class JobSpec:
    """What a requester asks for (the plan comes from the router unless given)."""

    model: str  # model name as registered on chain
    input: bytes  # the prompt as UTF-8, or encoded images (worker.node.payload)
    max_tokens: int = 32  # tokens to generate (1 for a classifier)
    fee_wei: int | None = 10**16  # held in escrow until finalize; None: the plan's fee floor
    replicas: int = 3  # node-disjoint replicas (at most JobMarket.MAX_REPLICAS)
    temperature: float = 0.0  # 0 = greedy
    seed: int = 0  # seed of the reproducible sampling
    codec: str = "int8-outlier"  # activation codec between hops
    commit_window_s: int = 300  # seconds from submission until commits close
    reveal_window_s: int = 120  # seconds after the commit deadline until reveals close
    spec: ExecSpec = ExecSpec()  # dtype, weights, verification mode and sampling extras


@dataclass(frozen=True)
class Planned:
    """The plan the job will run."""

    plan: Plan
    latency_ms: tuple[float, ...] = ()  # the router's predicted per-token latency per replica (if it planned)

    def line(self) -> str:
        rows = [f"planned {len(self.plan.replicas)} replica(s):"]
        for r, rep in enumerate(self.plan.replicas):
            hops = " -> ".join(f"{h.node[:10]}[{h.start},{h.end})" for h in rep.hops)
            ms = f"  ~{self.latency_ms[r]:.0f} ms/token predicted" if self.latency_ms else ""
            rows.append(f"  replica {r}: {hops}{ms}")
        return "\n".join(rows)


@dataclass(frozen=True)
class Submitted:
    """The fee is in escrow and the job is open."""

    job_id: JobId
    fee_wei: int
    tx_hash: str  # 0x hash of the submitJob transaction

    def line(self) -> str:
        return f"submitted job {self.job_id} with {fmt_eth(self.fee_wei)} in escrow (tx {self.tx_hash})"


@dataclass(frozen=True)
class Progress:
    job_id: int
    replicas: int
    committed: int  # replicas whose tail committed
    revealed: int  # replicas whose tail revealed
    status: str  # open | disputed | attesting | finalized

    def line(self) -> str:
        if self.status == "finalized":
            return f"job {self.job_id}: finalized"
        if self.status in ("disputed", "attesting"):
            return (f"job {self.job_id}: the revealed outputs disagree or the job was audited: "
                    f"{'drawing verifiers' if self.status == 'disputed' else 'verifiers attesting'}")
        stage = "running" if self.committed == 0 else "settling"
        return (f"job {self.job_id}: {stage}: committed {self.committed}/{self.replicas}, "
                f"revealed {self.revealed}/{self.replicas}")


Update = Planned | Submitted | Progress


def run_job(client: TesseraChain, spec: JobSpec, *, plan: Plan | None = None, mode: Mode | str = Mode.LATENCY,
            weights: Weights | None = None, source: Source | None = None,
            on_progress: Callable[[Update], None] | None = None, wait: bool = True,
            timeout_s: float | None = None, decode: bool = True) -> JobResult:
    """Plan ``spec`` with the router (unless ``plan`` is given; ``source`` defaults to the
    client's chain with live probes), check it, escrow the fee and submit it. With ``wait``,
    follow it to finalization, finalizing it ourselves past the reveal deadline, and return
    the result (``timeout_s`` defaults to the job's windows plus a minute); without, return
    the pending result at once. ``on_progress`` gets a Planned, a Submitted and then every
    changed Progress."""
    notify = on_progress or (lambda _u: None)
    check(client, spec, plan)
    latency: tuple[float, ...] = ()
    if plan is None:
        routed = plan_replicas((source or client_source(client))(spec.model), spec.replicas, mode, weights)
        plan, latency = routed.plan, tuple(c.latency_ms for c in routed.costs)
    notify(Planned(plan, latency))
    fee = check_fee(client, spec, plan)
    job_id = client.submit_job(plan, spec.input, spec.max_tokens, fee, temperature=spec.temperature,
                               seed=spec.seed, codec=spec.codec, commit_window_s=spec.commit_window_s,
                               reveal_window_s=spec.reveal_window_s, spec=spec.spec)
    notify(Submitted(job_id, fee, client.get_request(job_id).tx_hash))
    if not wait:
        return result(client, job_id, decode=False)
    if timeout_s is None:
        p = client.deployment.params
        timeout_s = (spec.commit_window_s + spec.reveal_window_s + p.attest_window_s + 2 * p.finalize_grace_s
                     + WAIT_MARGIN_S)
    return follow(client, job_id, timeout_s=timeout_s, on_progress=notify, decode=decode)


def check(client: TesseraChain, spec: JobSpec, plan: Plan | None = None) -> None:
    """What can be checked before the fee is escrowed: input, replica count, model, plan, balance.

    The contract's own rules (plan coverage, active nodes on their spans, windows, fee bounds)
    are checked by the chain itself: ``submit_job`` simulates ``submitJob`` before sending it.
    """
    if not spec.input:
        raise JobError("the job has no input; pass a prompt or an image")
    check_input(spec.model, spec.input, spec.max_tokens)
    n = len(plan.replicas) if plan is not None else spec.replicas
    most = client.max_replicas()
    if not 1 <= n <= most:
        raise JobError(f"a job runs 1 to {most} replicas (JobMarket.MAX_REPLICAS), not {n}; ask for fewer")
    try:
        model = client.get_model(spec.model)
    except ContractError as exc:
        if exc.name != "ModelUnknown":
            raise
        raise JobError(f"model {spec.model!r} is not registered on this chain; check the name "
                       "(`tessera router advise --model NAME` lists who serves it)") from None
    if model.deprecated:
        raise JobError(f"model {spec.model!r} was deprecated by its publisher; it takes no new jobs")
    if plan is not None and (plan.model != spec.model or plan.num_blocks != model.num_blocks):
        raise JobError(f"the plan is for {plan.model} with {plan.num_blocks} blocks, but {spec.model} has "
                       f"{model.num_blocks} on chain; plan the job again")
    if spec.fee_wei is not None and client.balance() < spec.fee_wei:
        raise JobError(f"account {client.address} holds {fmt_eth(client.balance())}, less than the fee "
                       f"({fmt_eth(spec.fee_wei)}); fund it or lower the fee")


def check_input(model: str, data: bytes, max_tokens: int) -> None:
    """Refuse input the model can never run (an image for a language model, a prompt for a
    classifier, a prompt past the context) with the rule the head applies, when the model is
    installed here; otherwise the nodes refuse it and the job refunds after its deadlines."""
    # lazy: torch and transformers load only when a job is checked (fast CLI start-up)
    from worker.node.payload import head_inputs
    from worker.store import load_manifest, resolve

    try:
        directory = resolve(model)
        kind = load_manifest(directory).kind
    except (ModelError, OSError) as exc:
        logger.info("input of %s not checked here: %s", model, exc)
        return
    head_inputs(kind, directory, data, max_tokens)


def check_fee(client: TesseraChain, spec: JobSpec, plan: Plan) -> int:
    """The fee to escrow: ``spec.fee_wei``, or the plan's floor (JobMarket.feeFloor: what its nodes
    ask for ``max_tokens`` plus the verification reserve) when it is None. A fee below the floor,
    or more than the account holds, raises JobError before anything is sent."""
    floor = client.fee_floor(plan, spec.max_tokens, spec.spec.dtype, spec.spec.weights)
    fee = floor if spec.fee_wei is None else spec.fee_wei
    if fee < floor:
        raise JobError(f"the fee {fmt_eth(fee)} is below {fmt_eth(floor)}, what the planned nodes ask for "
                       f"{spec.max_tokens} tokens plus the verification reserve; raise the fee (or leave it out)")
    if client.balance() < fee:
        raise JobError(f"account {client.address} holds {fmt_eth(client.balance())}, less than the fee "
                       f"({fmt_eth(fee)}); fund it or lower the fee")
    return fee


def progress(chain: TesseraChain, job_id: int) -> Progress:
    j = chain.get_job(job_id)
    return Progress(job_id, j.num_replicas, len(replicas_in(j.committed_mask)), len(replicas_in(j.revealed_mask)),
                    j.status)


def result(chain: TesseraChain, job_id: int, decode: bool = True) -> JobResult:
    """The job as the chain records it: its plan, the reveals so far and, once finalized, the
    settlement from JobFinalized (with the verifiers' attestations after a dispute). ``decode``:
    also decode the output (needs the model here)."""
    req = chain.get_request(job_id)
    m = chain.get_model(req.model_id)
    settled = chain.settlement(job_id)
    reveals = chain.reveals(job_id)
    answer = settled.answer if settled else None
    output = reveals[answer].output if answer is not None else b""
    text = decode_text(m.name, output) if decode and output else None
    attestations = chain.dispute_state(job_id).attestations if settled and settled.verifiers else ()
    return JobResult(JobId(job_id), chain.model_label(m), req.plan(chain.model_label(m), m.num_blocks), req.fee,
                     req.tx_hash, {r: "0x" + v.output_hash.hex() for r, v in sorted(reveals.items())}, settled,
                     output, text, attestations, chain.get_job(job_id).status)


def follow(chain: TesseraChain, job_id: int, timeout_s: float = 600.0, poll_s: float = 0.5,
           on_progress: Callable[[Progress], None] | None = None, finalize_after_deadline: bool = True,
           decode: bool = True) -> JobResult:
    """Block until the job is finalized, moving it on as any keeper may: past the reveal deadline
    finalize it (so a job whose tails all vanished still refunds); when disputed, draw its
    verifiers; past the attestation deadline, finalize the dispute."""
    clock = ChainClock(chain.w3)
    last = None
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        p = progress(chain, job_id)
        if p != last and on_progress:
            on_progress(p)
        last = p
        if p.status == "finalized":
            return result(chain, job_id, decode)
        if finalize_after_deadline and chain.account:
            push(chain, job_id, clock.now())
        time.sleep(poll_s)
    req = chain.get_request(job_id)
    raise JobError(f"job {job_id} was not finalized within {timeout_s:.0f} s (reveal deadline "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(req.reveal_deadline))}); once that passed, "
                   f"`tessera job finalize {job_id}` settles it (anyone may); `tessera job status {job_id}` shows it")


def push(chain: TesseraChain, job_id: int, now: int) -> JobSettlement | None:
    """Move the job on if it is time (anyone may): finalize an open job past its reveal deadline,
    draw a disputed job's verifiers, finalize an attesting job once every verifier attested or the
    attestation deadline passed."""
    job = chain.get_job(job_id)
    try:
        if job.status == "open" and now > job.reveal_deadline:
            out = chain.finalize(job_id)
        elif job.status == "disputed" and chain.w3.eth.block_number >= job.seed_block:  # drawn from the next block
            out = chain.draw_verifiers(job_id)
        elif job.status == "attesting" and (now > job.stage_deadline or chain.dispute_state(job_id).all_attested):
            out = chain.finalize(job_id)
        else:
            return None
    except ContractError as exc:
        if exc.name not in MOVED_ON:
            raise
        return None
    logger.info("job %s: moved it on (%s)", job_id, type(out).__name__)
    return out if isinstance(out, JobSettlement) else None


def decode_text(model: str, output: bytes) -> str | None:
    """The output as text (language models) or class ids (classifiers) when the model is
    installed here; None otherwise (the output bytes hold the ids either way)."""
    # lazy: torch and transformers load only when an output is decoded (fast CLI start-up)
    from worker.node.payload import describe_output
    from worker.store import load_manifest, resolve

    try:
        directory = resolve(model)
        return describe_output(load_manifest(directory).kind, directory, output)
    except (ModelError, OSError) as exc:
        logger.info("output of %s left as ids: %s", model, exc)
        return None
