"""A whole replica in one process: real stages, the real codec at every cut, the real sampler, receipts.

This is what a ring of nodes computes, minus gRPC and signatures: the head
embeds and runs its span, each hop's output crosses the job's codec (encode
then decode) to the next, the tail samples with :func:`worker.sampling.sample`,
and every hop records its :class:`ReceiptRecorder`. A hop may run several
sub-span stages back to back (how a hop that skips a block is built) and may
alter what it sends (``LocalHop.alter``): tests and ``tessera bench verify``
build dishonest hops this way and honest ones without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from proto.types import JobId, NodeId
from worker import codec
from worker.planview import GenParams
from worker.sampling import sample
from worker.shard import load_stage
from worker.stage import Stage
from worker.verify.receipt import HopReceipt, ReceiptRecorder
from worker.verify.spec import VerifyError

Alter = Callable[[torch.Tensor, int], torch.Tensor]  # (the hop's output, step) -> what it sends instead
Choose = Callable[[torch.Tensor, int], int]  # (the tail's logits row, step) -> the token it emits
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class LocalHop:
    """One hop of an in-process replica: the span it claims and the stages it really runs."""

    node: NodeId  # the address its receipt names
    start: int  # claimed span [start, end)
    end: int
    stages: tuple[Stage, ...]  # sub-spans run back to back without a codec (one stage when honest)
    alter: Alter | None = None  # changes what the hop sends (and fingerprints); None when honest


def load_hop(model_dir: Path | str, node: NodeId, start: int, end: int, *, dtype: str = "fp32",
             weights: str = "fp32", device: str = "cpu") -> LocalHop:
    """An honest hop serving ``[start, end)`` with ``dtype`` compute and ``weights``."""
    return LocalHop(node, start, end, (load_stage(model_dir, start, end, device, DTYPES[dtype], weights),))


@dataclass(frozen=True)
class ReplicaRun:
    """What a replica produced: the output ids, every hop's receipt, and the time it took."""

    tokens: tuple[int, ...]
    receipts: tuple[HopReceipt, ...]
    seconds: float  # wall time of generation (stages, codec, sampling, receipts)


def run_replica(hops: Sequence[LocalHop], params: GenParams, prompt: Sequence[int], job_id: JobId,
                replica: int = 0, choose: Choose | None = None) -> ReplicaRun:
    """Generate ``params.max_tokens`` tokens (or up to EOS) after ``prompt`` through ``hops``; the tail
    samples with ``params`` (:func:`worker.sampling.sample`) unless ``choose`` says otherwise."""
    if not hops or not prompt:
        raise VerifyError("a replica needs at least one hop and a non-empty prompt")
    t0 = time.perf_counter()
    recs = [ReceiptRecorder(job_id, replica, i, h.node, h.start, h.end) for i, h in enumerate(hops)]
    caches = [[s.new_cache() for s in h.stages] for h in hops]
    x = torch.tensor([list(prompt)], device=hops[0].stages[0].device)
    tokens: list[int] = []
    with torch.inference_mode():
        for step in range(params.max_tokens):
            h = x
            for i, hop in enumerate(hops):
                if i > 0:  # the wire: exactly what the next node would decode
                    h = codec.decode(codec.encode(h, params.codec, params.block))
                tail = i == len(hops) - 1
                for j, stage in enumerate(hop.stages):
                    h = stage.forward(h.to(stage.device), caches[i][j], last=tail and j == len(hop.stages) - 1)
                if hop.alter is not None:
                    h = hop.alter(h, step)
                recs[i].add(step, h)
            row = h[0, -1]
            tok = sample(row, params.temperature_milli, params.seed, step) if choose is None else choose(row, step)
            tokens.append(tok)
            for r in recs:
                r.seal(tokens)
            if tok in params.eos_token_ids:
                break
            x = torch.tensor([[tok]], device=hops[0].stages[0].device)
    receipts = tuple(r.receipt(tokens) for r in recs)
    return ReplicaRun(tuple(tokens), receipts, time.perf_counter() - t0)
