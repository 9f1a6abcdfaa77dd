"""End-to-end fixtures: a real anvil, real contracts and real `tessera operator run`
processes talking gRPC on 127.0.0.1, all stopped at the end even on failure."""

from __future__ import annotations

import pytest

from tessera.devcluster import DevCluster


@pytest.fixture(scope="module")
def lm_cluster(tmp_path_factory):
    """SmolLM2 split in two spans, three nodes per span (three 2-hop replicas)."""
    with DevCluster(tmp_path_factory.mktemp("lm"), model="smollm2-135m", copies=3) as c:
        c.start()
        yield c


@pytest.fixture(scope="module")
def vision_cluster(tmp_path_factory):
    with DevCluster(tmp_path_factory.mktemp("cnn"), model="digits-cnn", copies=3) as c:
        c.start()
        yield c


@pytest.fixture(scope="session")
def reference_tokens():
    """transformers' greedy continuation of a prompt, as token ids: the answer a job must give."""

    def ref(model_dir, prompt: str, n: int) -> list[int]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=n, do_sample=False)
        return out[0, ids.shape[1]:].tolist()

    return ref
