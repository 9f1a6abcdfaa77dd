"""Sharded families over real gRPC: a 3-stage ring whose other stages are ``tessera operator run
--plan-file`` processes gives transformers' greedy tokens, for GPT-2 with inverse-layer-index attention
scaling (which the old per-stage renumbering broke silently) and Gemma 3 (sliding and global layers with
their own rotary embeddings, scaled embeddings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.models_matrix import multi_process, reference  # noqa: E402
from worker.shard.tiny import save_tiny_model  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("arch", ["gpt2-inverse-layer-scaling", "gemma3"])
def test_three_stage_processes_match_generate(arch, tmp_path):
    d = save_tiny_model(arch, tmp_path / arch)
    want, _ = reference(d)
    (tmp_path / "procs").mkdir()
    assert multi_process(d, tmp_path / "procs", parts=3) == want
