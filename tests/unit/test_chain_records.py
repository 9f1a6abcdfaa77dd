"""Plan packing, codec ids, cursor files and model commitments (no chain)."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st

from chain.events import END_OF_BLOCK, Cursor, read_cursor, write_cursor
from proto.errors import ConfigError
from proto.types import Codec, Hop, Plan, Replica, pack_plan, unpack_plan
from tessera.cli.model_register import commitment_from_hashes

ADDR = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


@st.composite
def plans(draw):
    num_blocks = draw(st.integers(1, 200))
    reps = []
    for _ in range(draw(st.integers(1, 8))):
        cuts = sorted(draw(st.sets(st.integers(1, num_blocks - 1), max_size=min(5, num_blocks - 1)))) if num_blocks > 1 else []
        bounds = [0, *cuts, num_blocks]
        reps.append(Replica(tuple(Hop(draw(ADDR), a, b) for a, b in zip(bounds, bounds[1:]))))
    return Plan("m", num_blocks, tuple(reps))


@given(plans())
def test_plan_packing_round_trips(plan):
    back = unpack_plan(pack_plan(plan), plan.model, plan.num_blocks)
    assert [[(h.node.lower(), h.start, h.end) for h in r.hops] for r in back.replicas] == \
        [[(h.node.lower(), h.start, h.end) for h in r.hops] for r in plan.replicas]


def test_codec_ids_match_the_documented_mapping():
    assert [Codec.parse(n) for n in ["fp32", "fp16", "bf16", "int8-absmax", "int8-outlier", "int8-dynamic"]] == \
        list(range(6))
    assert Codec.parse(4).label == "int8-outlier"
    with pytest.raises(KeyError):
        Codec.parse("int4")


def test_cursor_file_round_trip_and_order(tmp_path):
    f = tmp_path / "sub" / "cursor.json"
    assert read_cursor(f) is None
    write_cursor(f, Cursor(10, 3))
    assert read_cursor(f) == Cursor(10, 3)
    assert Cursor(10, 3) < Cursor(10, 4) < Cursor(10, END_OF_BLOCK) < Cursor(11, 0)
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_model_commitment_from_stage_hashes():
    stages = [bytes([i]) * 32 for i in range(5)]
    n, root, tok, cfg = commitment_from_hashes({"stage_hashes": ["0x" + h.hex() for h in stages]})
    assert n == 3 and root == keccak(b"".join(stages)) and tok == cfg == b"\0" * 32
    with pytest.raises(ConfigError):
        commitment_from_hashes({"stage_hashes": ["0x" + h.hex() for h in stages], "num_blocks": 4})
    with pytest.raises(ConfigError):
        commitment_from_hashes({"num_blocks": 3})
    with pytest.raises(ConfigError):
        commitment_from_hashes({"num_blocks": 3, "weights_root": "0x1234"})
