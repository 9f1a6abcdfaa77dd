"""The head-side driver of one replica: ``run_replica``.

It runs inside whichever process hosts the head stage (the worker daemon when
the plan makes it head, or a benchmark). Step 0 embeds the whole prompt and
runs the head's span; every later step feeds back the token the tail sampled.
With a single hop (head == tail) it samples locally and no network is used.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import torch

from proto.errors import ProtocolError
from proto.tessera.v1 import worker_pb2 as pb
from proto.types import encode_output
from worker import codec
from worker.config import WorkerConfig
from worker.planview import JobRoute
from worker.ring.hop import OnOutput, tail_choose
from worker.ring.link import Channels, Link, corrupt, message
from worker.signing import PendingCheck, Signer
from worker.stage import Stage

logger = logging.getLogger(__name__)


def run_replica(stage: Stage, route: JobRoute, replica: int, inputs: Sequence[int] | torch.Tensor,
                signer: Signer, *, config: WorkerConfig | None = None, on_output: OnOutput | None = None,
                channels: Channels | None = None) -> list[int]:
    """Generate with ``replica`` of ``route`` from the head; return the token ids (or class ids).

    ``inputs``: prompt token ids for a language model, the input tensor (e.g.
    images ``(B, 1, 8, 8)``) for a classifier. ``on_output`` is called with the
    canonical output bytes when the head is also the tail (otherwise the tail
    calls its own); the tail's bytes are checked against the returned ids.
    """
    config = config or WorkerConfig()
    job = int(route.job_id)
    if route.position(replica, signer.address) != 0:
        raise ProtocolError(f"node {signer.address} is not the head of replica {replica} of job {job}")
    head = route.hop(replica, 0)
    if (head.start, head.end) != (stage.spec.start, stage.spec.end):
        raise ProtocolError(f"plan gives the head [{head.start}, {head.end}); the stage serves "
                            f"[{stage.spec.start}, {stage.spec.end})")
    x = _first_input(route, inputs, stage)
    steps = 1 if route.kind == "classifier" else route.params.max_tokens
    cache = stage.new_cache()
    hops = route.replicas[replica]
    own_channels = channels is None
    channels = channels or Channels(config.max_message_bytes)
    link = None
    ids: list[int] = []
    output = b""
    compute_s = wait_s = 0.0  # seconds in the head's forward / waiting for the ring
    signature = None  # the check of the last answer's signature, overlapped with the next step's compute
    try:
        if len(hops) > 1:
            link = Link(channels.stub(hops[1].endpoint), hops[1].node, config.hop_timeout_s)
            link.call(signer.sign(message(job, replica, 0, 0, pb.KIND_OPEN)))
        for step in range(steps):
            if signature is not None:
                signature.start()
            t0 = time.perf_counter()
            with torch.inference_mode():
                y = stage.forward(x, cache, last=link is None and route.kind == "causal-lm")
            compute_s += time.perf_counter() - t0
            if signature is not None:
                signature.result()  # the token this step ran on came from the planned successor
            if config.byzantine:
                y = corrupt(y, config.byzantine_noise, step)
            if link is None:
                new, done = tail_choose(route, y, step, len(ids))
                output = encode_output(ids + new) if done else b""
            else:
                p = route.params
                msg = message(job, replica, 0, step, pb.KIND_STEP, payload=codec.encode(y, p.codec, p.block))
                signer.sign(msg)
                t1 = time.perf_counter()
                resp = link.exchange(msg)
                signature = PendingCheck(resp, link.peer)
                wait_s += time.perf_counter() - t1
                new, output = list(resp.ids), resp.output
            ids.extend(new)
            if output:  # the tail is done (max_tokens or end of sequence)
                break
            x = torch.tensor([new], dtype=torch.long, device=stage.device)
        if signature is not None:
            signature.result()
        if link is not None:
            link.call(signer.sign(message(job, replica, 0, len(ids), pb.KIND_CLOSE)))
    finally:
        if link is not None:
            link.close()
        if own_channels:
            channels.close()
    if output != encode_output(ids):
        raise ProtocolError(f"tail of replica {replica} reported an output that does not match its tokens")
    if link is None and on_output is not None:
        on_output(job, replica, output)
    logger.info("job %s replica %s: %d ids through %d hop(s); head %.1f ms/step compute, %.1f ms/step "
                "waiting for the ring", job, replica, len(ids), len(hops), 1e3 * compute_s / max(len(ids), 1),
                1e3 * wait_s / max(len(ids), 1))
    return ids


def _first_input(route: JobRoute, inputs, stage: Stage) -> torch.Tensor:
    if route.kind == "classifier":
        return torch.as_tensor(inputs).to(stage.device, stage.dtype)
    ids = torch.as_tensor(list(inputs), dtype=torch.long)
    if ids.numel() == 0:
        raise ProtocolError("the prompt is empty; give at least one token")
    return ids.view(1, -1).to(stage.device)
