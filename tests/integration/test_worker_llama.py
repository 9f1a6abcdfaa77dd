"""A Llama-architecture model served by real worker processes (worker.shard's loader)
produces the same greedy tokens as transformers' generate on the unsplit model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench._procs import bench_key, even_spans, free_port, ring_route, workers  # noqa: E402
from worker import codec  # noqa: E402
from worker.planview import GenParams  # noqa: E402
from worker.ring import run_replica  # noqa: E402
from worker.signing import Signer  # noqa: E402

pytestmark = pytest.mark.integration
PROMPT = [3, 14, 15, 92, 65, 35, 89, 79]
TOKENS = 16


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("llama") / "tiny-llama"
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=256, max_position_embeddings=128)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(d)
    return d


def test_three_llama_stage_processes_match_transformers_generate(llama_dir, tmp_path):
    from worker.shard import load_full, load_stage

    model = load_full(llama_dir)
    model.generation_config.eos_token_id = None
    with torch.inference_mode():
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=TOKENS, do_sample=False, pad_token_id=0)
    expected = out[0, len(PROMPT):].tolist()

    spans = even_spans(6, 3)
    ports = [0] + [free_port() for _ in spans[1:]]
    routes = [ring_route(1, "tiny-llama", 6, spans, ports, GenParams(max_tokens=TOKENS, codec=codec.FP32)),
              ring_route(2, "tiny-llama", 6, spans, ports, GenParams(max_tokens=TOKENS, codec=codec.INT8_OUTLIER))]
    head = load_stage(llama_dir, *spans[0])
    with workers(llama_dir, spans, ports, routes, tmp_path):
        assert run_replica(head, routes[0], 0, PROMPT, Signer(bench_key(0))) == expected
        int8 = run_replica(head, routes[1], 0, PROMPT, Signer(bench_key(0)))
    assert sum(a == b for a, b in zip(int8, expected)) >= TOKENS // 2  # int8 may drift late, not early
