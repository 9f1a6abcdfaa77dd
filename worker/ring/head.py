"""The head-side driver of one replica: ``run_replica``.

It runs inside whichever process hosts the head stage (the worker daemon when
the plan makes it head, or a benchmark). Step 0 embeds the whole prompt and
runs the head's span; every later step feeds back the token the tail sampled.
With a single hop (head == tail) it samples locally and no network is used.
When a hop fails or stalls, the replica continues on that span's standby
(:mod:`worker.ring.failover`): a new session on the new route rebuilds every
hop's cache from the prompt and the ids generated so far (see ``_run``) and
generation goes on from there.
An attempt ends by the job's deadline (``route.deadline``) and every answer is
awaited at most ``config.hop_timeout_s``; a refusal the next hop calls
deterministic (the input can never run) surfaces as ``JobInputError``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import torch

from proto.errors import JobInputError, ProtocolError
from proto.types import encode_output
from worker.config import WorkerConfig
from worker.planview import JobRoute
from worker.ring.failover import next_route
from worker.ring.link import Channels, PeerTimeout
from worker.ring.pipeline import OnOutput, Pipeline
from worker.signing import Signer
from worker.stage import Stage, to_stage

logger = logging.getLogger(__name__)

OnToken = Callable[[int, Sequence[int]], None]  # (step, ids the tail chose at that step)


def run_replica(stage: Stage, route: JobRoute, replica: int, inputs: Sequence[int] | torch.Tensor,
                signer: Signer, *, config: WorkerConfig | None = None, on_output: OnOutput | None = None,
                channels: Channels | None = None, on_token: OnToken | None = None) -> list[int]:
    """Generate with ``replica`` of ``route`` from the head; return the token ids (or class ids, or
    an embedding's words).

    ``inputs``: prompt token ids for a language model (the text's ids for an
    embedding model), the input tensor (e.g. images ``(B, 1, 8, 8)``) for a
    classifier. ``on_output`` is called with the
    canonical output bytes when the head is also the tail (otherwise the tail
    calls its own); the tail's bytes are checked against the returned ids.
    ``on_token`` gets each step's ids as they arrive (a preview for streaming:
    their signature check finishes during the next step).
    """
    config = config or WorkerConfig()
    job = int(route.job_id)
    if route.deadline is not None and time.time() > route.deadline:
        raise ProtocolError(f"job {job} is past its commit deadline; not starting replica {replica}")
    if route.position(replica, signer.address) != 0:
        raise ProtocolError(f"node {signer.address} is not the head of replica {replica} of job {job}")
    head = route.hop(replica, 0)
    if (head.start, head.end) != (stage.spec.start, stage.spec.end):
        raise ProtocolError(f"plan gives the head [{head.start}, {head.end}); the stage serves "
                            f"[{stage.spec.start}, {stage.spec.end})")
    prompt = _first_input(route, inputs, stage)
    steps = route.steps
    own_channels = channels is None
    channels = channels or Channels(config.max_message_bytes)
    ids: list[int] = []
    output, mask = b"", 0  # mask: the route the replica runs (0 = its primaries)
    shown = 0  # steps already previewed through on_token (a failover may run a step again)

    def preview(step: int, new: Sequence[int]) -> None:
        nonlocal shown
        if on_token is not None and step >= shown:
            shown = step + 1
            on_token(step, new)

    try:
        while True:
            served = route.served(replica, mask)
            try:
                output, pipe = _run(stage, served, replica, prompt, ids, steps, signer, config, channels,
                                    on_output, preview)
                break
            except JobInputError:
                raise
            except (ProtocolError, PeerTimeout) as exc:  # a hop failed or stalled: fail over if the plan can
                mask = next_route(served, replica, channels, config.hop_timeout_s)
                if mask is None or route.kind != "causal-lm":  # one-pass jobs are rerun by the daemon
                    raise
                logger.warning("job %s replica %s: %s; continuing at step %d on route %#x (standby in place "
                               "of the failed hop), replaying %d ids", job, replica, exc, len(ids), mask, len(ids))
    finally:
        if own_channels:
            channels.close()
    if output != encode_output(ids):
        raise ProtocolError(f"tail of replica {replica} reported an output that does not match its tokens")
    logger.info("job %s replica %s: %d ids through %d hop(s); head ms per decode step: %s", job, replica, len(ids),
                len(served.replicas[replica]), pipe.times.summary())
    return ids


def _run(stage: Stage, route: JobRoute, replica: int, prompt: torch.Tensor, ids: list[int], steps: int,
         signer: Signer, config: WorkerConfig, channels: Channels, on_output: OnOutput | None,
         on_token: OnToken | None) -> tuple[bytes, Pipeline]:
    """Run ``replica`` on ``route`` to the end, appending to ``ids`` the ids whose answers passed
    their signature check (only those survive a failover); return the tail's output and the pipeline.

    After a failover (``ids`` not empty) every hop of the new route rebuilds its cache by replaying
    the steps with the known ids (teacher-forced): the activations are the first run's, bit for bit,
    for every codec (an int8 codec's blocks and outlier choice span a message's rows, so one prefill
    of prompt + ids would differ), the tail must choose the same ids, and every hop's receipt
    fingerprints every step, as the verifier's re-execution expects.
    """
    done = len(ids)
    x = prompt
    output = b""
    with Pipeline(route, replica, 0, stage, signer, config, channels, defer_answer_check=True,
                  on_output=on_output) as pipe:
        pipe.open()
        unchecked: Sequence[int] = ()  # the last answer's ids, until its check is joined
        ran = 0  # steps run (a classifier's one step answers with one id per image)
        for step in range(steps):
            t0 = time.perf_counter()
            y = pipe.forward(x, step)  # joins the check of the previous answer
            ids.extend(unchecked)
            unchecked = ()
            new, output = pipe.send(y, step)
            ran = step + 1
            if step < done:  # a replayed step: the tail must choose what it chose the first time
                if list(new) != ids[step:step + 1]:
                    raise ProtocolError(f"replaying step {step} on route {pipe.mask:#x} gave ids {list(new)}, "
                                        f"not {ids[step:step + 1]}")
                x = torch.tensor([[ids[step]]], dtype=torch.long, device=stage.device)
                pipe.times.end_step(step, time.perf_counter() - t0)
                continue
            unchecked = new
            if on_token is not None:
                on_token(step, new)
            if output:  # the tail is done (max_tokens or end of sequence)
                pipe.times.end_step(step, time.perf_counter() - t0)
                break
            x = torch.tensor([list(new)], dtype=torch.long, device=stage.device)
            pipe.times.end_step(step, time.perf_counter() - t0)
        pipe.finish(ran)  # the last answer's check is joined before the ids are returned
        ids.extend(unchecked)
    return output, pipe


def _first_input(route: JobRoute, inputs, stage: Stage) -> torch.Tensor:
    if route.kind == "classifier":
        return to_stage(torch.as_tensor(inputs), stage.device, stage.dtype)
    ids = torch.as_tensor(list(inputs), dtype=torch.long)
    if ids.numel() == 0:
        raise ProtocolError("the prompt is empty; give at least one token")
    return ids.view(1, -1).to(stage.device)
