"""Activation codec: round-trip error bounds, outliers, and refusal of malformed payloads."""

from __future__ import annotations

import math

import pytest
import torch

from proto.errors import CodecError
from worker import codec as C


def _acts(rows=16, cols=576, sink=2e4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, rows, cols, generator=g) * 3  # typical values ~1e0-1e1
    x[0, 0, :8] = sink  # attention-sink first token
    return x


@pytest.mark.parametrize("cid", [C.FP32, C.FP16, C.BF16])
def test_passthrough_codecs_round_trip_within_their_precision(cid):
    x = _acts(sink=3e3)
    y = C.decode(C.encode(x, cid))
    rel = {C.FP32: 0.0, C.FP16: 2**-11, C.BF16: 2**-8}[cid]
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.all((y - x).abs() <= rel * x.abs() + 1e-7)


@pytest.mark.parametrize("block", [16, 64, 100])
def test_absmax_error_is_at_most_half_a_step_of_each_block(block):
    x = _acts(sink=10.0)
    y = C.decode(C.encode(x, C.INT8_ABSMAX, block=block))
    flat, err = x.flatten(), (y - x).flatten()
    pad = (-flat.numel()) % block
    scale = torch.nn.functional.pad(flat.abs(), (0, pad)).view(-1, block).amax(1)
    bound = (scale / 127 / 2 * 1.0001 + 1e-6).repeat_interleave(block)[: flat.numel()]
    assert torch.all(err.abs() <= bound)


def test_outlier_decomposition_keeps_the_sink_row_and_the_body_precise():
    x = _acts()
    x[0, 5, 100] = 900.0  # a lone outlier feature
    plain = C.decode(C.encode(x, C.INT8_ABSMAX))
    out = C.decode(C.encode(x, C.INT8_OUTLIER))
    assert torch.allclose(out[0, 0], x[0, 0], rtol=2**-10)  # sink row in fp16
    assert abs(out[0, 5, 100] - 900.0) < 0.5  # element outlier in fp16
    body_err = (out[0, 1:] - x[0, 1:]).abs().max()
    assert body_err < 0.1 < (plain[0, :1] - x[0, :1]).abs().max()
    assert body_err < (plain[0, 5] - x[0, 5]).abs().max()


def test_outlier_codec_on_one_token_costs_about_a_quarter_of_fp32():
    x = torch.randn(1, 1, 576)
    enc = C.encode(x, C.INT8_OUTLIER)
    assert enc.nbytes / (x.numel() * 4) < 0.30


def test_outliers_beyond_fp16_range_travel_in_fp32():
    x = _acts(sink=1e6)
    y = C.decode(C.encode(x, C.INT8_OUTLIER))
    assert torch.isfinite(y).all() and y[0, 0, 0] == 1e6


def test_dynamic_map_keeps_small_values_that_absmax_rounds_to_zero():
    pytest.importorskip("bitsandbytes")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 64, 576, generator=g) * torch.exp(1.5 * torch.randn(1, 64, 576, generator=g))
    small = x.abs() < 0.1  # heavy-tailed, like real activations
    rel = {c: ((C.decode(C.encode(x, c)) - x)[small].abs() / x[small].abs()).median() for c in (3, 5)}
    assert rel[C.INT8_DYNAMIC] < 0.2 < rel[C.INT8_ABSMAX]


def test_digest_binds_codec_shape_and_body():
    enc = C.encode(torch.ones(2, 3), C.FP16)
    assert enc.digest() != C.Encoded(enc.codec, (3, 2), enc.block, enc.data).digest()
    assert enc.digest() != C.Encoded(C.BF16, enc.shape, enc.block, enc.data).digest()
    assert enc.digest() == C.Encoded(*enc.__dict__.values()).digest()


def _corrupt(enc, **kw):
    return C.Encoded(**{**enc.__dict__, **kw})


@pytest.mark.parametrize("cid", sorted(C.NAMES))
def test_truncated_or_padded_payloads_are_refused(cid):
    if cid == C.INT8_DYNAMIC:
        pytest.importorskip("bitsandbytes")
    enc = C.encode(_acts(rows=3, cols=64), cid)
    for data in (enc.data[:-1], enc.data + b"\0", b""):
        with pytest.raises(CodecError):
            C.decode(_corrupt(enc, data=data))


def test_malformed_headers_are_refused():
    enc = C.encode(torch.randn(4, 8), C.INT8_OUTLIER)
    for bad in ({"shape": (4, 9)}, {"shape": (0, 8)}, {"shape": ()}, {"codec": 9}, {"block": 0},
                {"shape": (1 << 20, 1 << 20)}):
        with pytest.raises(CodecError):
            C.decode(_corrupt(enc, **bad))
    with pytest.raises(CodecError, match="exceeds"):
        C.decode(enc, max_bytes=enc.nbytes - 1)


def test_nan_inf_and_empty_tensors_are_refused_both_ways():
    for bad in (torch.tensor([[1.0, math.nan]]), torch.tensor([[math.inf, 1.0]]), torch.empty(0, 4)):
        with pytest.raises(CodecError):
            C.encode(bad, C.INT8_ABSMAX)
    enc = C.encode(torch.ones(1, 4), C.FP32)
    nan = torch.full((1, 4), math.nan).numpy().astype("<f4").tobytes()
    with pytest.raises(CodecError, match="NaN"):
        C.decode(_corrupt(enc, data=nan))
    bad_scale = C.encode(torch.ones(1, 4), C.INT8_ABSMAX)
    with pytest.raises(CodecError):
        C.decode(_corrupt(bad_scale, data=torch.tensor([math.inf]).numpy().tobytes() + bad_scale.data[4:]))


@pytest.mark.parametrize("cid", sorted(C.NAMES))
def test_every_codec_refuses_nan_and_inf_wherever_they_sit(cid):
    for where in ((0, 0), (3, 5)):  # row 0 is the attention-sink outlier row of _acts
        for bad in (math.nan, math.inf, -math.inf):
            x = _acts(rows=4, cols=64)
            x[0, where[0], where[1]] = bad
            with pytest.raises(CodecError, match="NaN or Inf"):
                C.encode(x, cid)


def test_int8_outlier_takes_finite_values_whose_squares_overflow_float32():
    x = _acts(rows=1, cols=64)  # one row: no outlier rows, the value stays in the body
    x[0, 0, 30] = 1e20  # finite; its square is not
    y = C.decode(C.encode(x, C.INT8_OUTLIER))
    assert torch.isfinite(y).all() and abs(float(y[0, 0, 30]) - 1e20) / 1e20 < 1e-3


def test_out_of_range_outlier_index_is_refused():
    enc = C.encode(_acts(rows=4, cols=64), C.INT8_OUTLIER)
    data = bytearray(enc.data)
    assert int.from_bytes(data[:4], "little") == 1  # one outlier row: the sink
    data[4:8] = (99).to_bytes(4, "little")
    with pytest.raises(CodecError, match="out of range"):
        C.decode(_corrupt(enc, data=bytes(data)))


def test_codec_names_and_ids():
    assert C.codec_id("int8-outlier") == 4 and C.codec_id(5) == 5 and C.codec_id("2") == 2
    with pytest.raises(CodecError, match="unknown codec"):
        C.codec_id("int4")


@pytest.mark.parametrize("cid", [C.FP32, C.FP16, C.BF16, C.INT8_ABSMAX, C.INT8_OUTLIER, C.INT8_DYNAMIC])
@pytest.mark.parametrize("seed", range(4))
def test_error_bound_covers_every_rounding_of_the_codec_and_no_more(cid, seed):
    """What a receiver holds a sender's receipt against: every original value lies within the bound of
    what it decoded, and the bound is the codec's own step (not a blanket tolerance)."""
    x = _acts(rows=9, sink=3e3 if cid == C.FP16 else 2e4, seed=seed)
    x[0, 3:, 507] *= 25  # a massive feature in every token, as SmolLM2's residual stream has
    enc = C.encode(x, cid, block=64)
    y, bound = C.decode(enc).flatten().numpy(), C.error_bound(enc)
    err = abs(x.flatten().numpy() - y)
    assert bound.shape == y.shape and (err <= bound).all()
    if cid == C.FP32:
        assert bound.max() <= 1e-6 * abs(y).max()
    else:  # tight: somewhere the codec's real rounding comes close to it
        assert (err / bound).max() >= 0.25


def test_error_bound_of_int8_is_half_a_step_of_each_block():
    x = _acts(rows=2, sink=10.0)
    enc = C.encode(x, C.INT8_ABSMAX, block=64)
    scale = x.flatten().abs().view(-1, 64).amax(1)
    want = (scale / 127 / 2).repeat_interleave(64).numpy()
    assert abs(C.error_bound(enc) / want - 1).max() < 1e-3
