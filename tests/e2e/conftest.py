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
