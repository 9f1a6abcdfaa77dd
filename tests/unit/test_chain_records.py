"""Plan packing, codec ids, cursor files and model commitments (no chain)."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st

from chain.events import END_OF_BLOCK, Cursor, read_cursor, write_cursor
from proto.errors import ConfigError
from proto.types import (
    STANDBY_BIT,
    Codec,
    DType,
    ExecSpec,
    Hop,
    JobMode,
    Plan,
    Replica,
    WeightsMode,
    model_id,
    pack_plan,
    split_model_ref,
    tail_words,
    unpack_plan,
)
from tessera.cli.model_register import commitment_from_hashes

ADDR = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


@st.composite
def plans(draw):
    num_blocks = draw(st.integers(1, 200))
    reps = []
    for _ in range(draw(st.integers(1, 8))):
        cuts = sorted(draw(st.sets(st.integers(1, num_blocks - 1), max_size=min(5, num_blocks - 1)))) if num_blocks > 1 else []
        bounds = [0, *cuts, num_blocks]
        hops = tuple(Hop(draw(ADDR), a, b) for a, b in zip(bounds, bounds[1:]))
        backed = draw(st.lists(st.sampled_from(hops), unique=True, max_size=len(hops)))
        reps.append(Replica(hops, tuple(Hop(draw(ADDR), h.start, h.end) for h in backed)))
    return Plan("m", num_blocks, tuple(reps))


def _shape(plan):
    return [([(h.node.lower(), h.start, h.end) for h in r.hops], sorted((h.node.lower(), h.start, h.end)
                                                                       for h in r.standbys)) for r in plan.replicas]


@given(plans())
def test_plan_packing_round_trips_with_standbys(plan):
    words = pack_plan(plan)
    assert _shape(unpack_plan(words, plan.model, plan.num_blocks)) == _shape(plan)
    # each standby directly follows the primary it backs; the primaries' mask skips the standbys
    for i, w in enumerate(words):
        if w & STANDBY_BIT:
            assert not words[i - 1] & STANDBY_BIT and (words[i - 1] >> 160) & 0xFFFFFFFF == (w >> 160) & 0xFFFFFFFF
    for rep in plan.replicas:
        flags = [sb for _, sb in rep.words()]
        assert rep.primary_mask() == sum(1 << i for i, sb in enumerate(flags) if not sb)
    tails = tail_words(words)
    assert len(tails) == len(plan.replicas) + sum(any(s.end == plan.num_blocks for s in r.standbys)
                                                  for r in plan.replicas)


def test_model_ids_are_namespaced_by_publisher():
    a, b = "0x" + "11" * 20, "0x" + "22" * 20
    assert model_id("digits-cnn", a) != model_id("digits-cnn", b)
    assert split_model_ref(f"{a}/digits-cnn") == ("0x1111111111111111111111111111111111111111", "digits-cnn")
    assert split_model_ref("digits-cnn") == (None, "digits-cnn")
    with pytest.raises(ValueError, match="NAME or 0xPUBLISHER/NAME"):
        split_model_ref("someone/digits-cnn")


def test_exec_spec_word_round_trips():
    spec = ExecSpec(DType.BF16, WeightsMode.INT8_MIXED, JobMode.OPTIMISTIC, 250, 900, 1100, 40)
    assert ExecSpec.unpack(spec.pack()) == spec
    assert ExecSpec().pack() == 0 and ExecSpec(dtype=DType.FP16).pack() == 2


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
