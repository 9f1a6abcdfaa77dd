"""Greedy decoding through sharded stages, with an activation codec at the cuts.

A :class:`Replica` describes one honest way of running the model: dtype,
torch threads, device, number of cuts and the codec used at each cut (the
stages are ``worker.shard.load_stage`` spans, evenly split, as the pipeline
runs them). :func:`greedy` runs one prompt and returns a
:class:`bench.eval.divergence.Run`: token ids and the top-2 logit margin at
every step, computed on the tail's logits in float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from bench._procs import even_spans
from bench.eval.divergence import Run, top2_margin
from worker import codec
from worker.shard import load_stage

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Replica:
    """One honest configuration of a replica."""

    name: str  # label in results, e.g. "fp32-1t"
    dtype: str = "fp32"  # weights and compute: fp32, bf16 or fp16
    threads: int = 1  # torch intra-op threads (CPU)
    device: str = "cpu"
    cuts: int = 0  # stage boundaries where activations go through the codec
    codec: str = "fp32"  # codec name at every cut
    block: int = 64  # codec block size, values

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {self.dtype!r}")
        if self.cuts < 0 or self.threads < 1:
            raise ValueError("cuts must be >= 0 and threads >= 1")
        codec.codec_id(self.codec)  # raises on an unknown codec name


class Pipeline:
    """The stages of one replica, loaded once and reused for every prompt."""

    def __init__(self, model_dir: Path, num_blocks: int, rep: Replica):
        self.rep, self.cid = rep, codec.codec_id(rep.codec)
        spans = even_spans(num_blocks, rep.cuts + 1)
        self.stages = [load_stage(model_dir, a, b, device=rep.device, dtype=DTYPES[rep.dtype]) for a, b in spans]
        self.wire_bytes = 0

    def greedy(self, prompt_ids: list[int], tokens: int) -> Run:
        """``tokens`` greedy steps after ``prompt_ids`` (prefill counts as step 0's forward)."""
        torch.set_num_threads(self.rep.threads)
        caches = [s.new_cache() for s in self.stages]
        x = torch.tensor([prompt_ids], device=self.rep.device)
        ids, margins = [], []
        with torch.inference_mode():
            for _ in range(tokens):
                h = x
                for i, stage in enumerate(self.stages):
                    if i > 0:
                        enc = codec.encode(h.float(), self.cid, self.rep.block)
                        self.wire_bytes += enc.nbytes
                        h = codec.decode(enc).to(device=h.device, dtype=stage.dtype)
                    h = stage.forward(h, caches[i])
                last = h[0, -1].float()  # (V,)
                tok = int(last.argmax())
                ids.append(tok)
                margins.append(float(top2_margin(last)))
                x = torch.tensor([[tok]], device=self.rep.device)
        return Run(tuple(ids), tuple(margins))
