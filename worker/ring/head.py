"""The head-side driver of one replica: ``run_replica``.

It runs inside whichever process hosts the head stage (the worker daemon when
the plan makes it head, or a benchmark). Step 0 embeds the whole prompt and
runs the head's span; every later step feeds back the token the tail sampled.
With a single hop (head == tail) it samples locally and no network is used.
An attempt ends by the job's deadline (``route.deadline``) and every answer is
awaited at most ``config.hop_timeout_s``; a refusal the next hop calls
deterministic (the input can never run) surfaces as ``JobInputError``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import torch

from proto.errors import ProtocolError
from proto.types import encode_output
from worker.config import WorkerConfig
from worker.planview import JobRoute
from worker.ring.link import Channels
from worker.ring.pipeline import OnOutput, Pipeline
from worker.signing import Signer
from worker.stage import Stage

logger = logging.getLogger(__name__)

OnToken = Callable[[int, Sequence[int]], None]  # (step, ids the tail chose at that step)


def run_replica(stage: Stage, route: JobRoute, replica: int, inputs: Sequence[int] | torch.Tensor,
                signer: Signer, *, config: WorkerConfig | None = None, on_output: OnOutput | None = None,
                channels: Channels | None = None, on_token: OnToken | None = None) -> list[int]:
    """Generate with ``replica`` of ``route`` from the head; return the token ids (or class ids).

    ``inputs``: prompt token ids for a language model, the input tensor (e.g.
    images ``(B, 1, 8, 8)``) for a classifier. ``on_output`` is called with the
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
    x = _first_input(route, inputs, stage)
    steps = 1 if route.kind == "classifier" else route.params.max_tokens
    own_channels = channels is None
    channels = channels or Channels(config.max_message_bytes)
    ids: list[int] = []
    output = b""
    try:
        with Pipeline(route, replica, 0, stage, signer, config, channels, defer_answer_check=True,
                      on_output=on_output) as pipe:
            pipe.open()
            for step in range(steps):
                new, output = pipe.step(x, step)
                ids.extend(new)
                if on_token is not None:
                    on_token(step, new)
                if output:  # the tail is done (max_tokens or end of sequence)
                    break
                x = torch.tensor([list(new)], dtype=torch.long, device=stage.device)
            pipe.finish(len(ids))  # the last answer's signature is checked before the ids are returned
    finally:
        if own_channels:
            channels.close()
    if output != encode_output(ids):
        raise ProtocolError(f"tail of replica {replica} reported an output that does not match its tokens")
    n = max(len(ids), 1)
    logger.info("job %s replica %s: %d ids through %d hop(s); head %.1f ms/step compute, %.1f ms/step "
                "waiting for the ring", job, replica, len(ids), len(route.replicas[replica]),
                1e3 * pipe.compute_s / n, 1e3 * pipe.wait_s / n)
    return ids


def _first_input(route: JobRoute, inputs, stage: Stage) -> torch.Tensor:
    if route.kind == "classifier":
        return torch.as_tensor(inputs).to(stage.device, stage.dtype)
    ids = torch.as_tensor(list(inputs), dtype=torch.long)
    if ids.numel() == 0:
        raise ProtocolError("the prompt is empty; give at least one token")
    return ids.view(1, -1).to(stage.device)
