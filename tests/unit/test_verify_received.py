"""A hop holds its predecessor's receipt against what that predecessor really sent (no framing)."""

from __future__ import annotations

import pytest
import torch

from proto.errors import ProtocolError
from proto.types import JobId, NodeId
from worker import codec
from worker.verify.receipt import ReceiptRecorder
from worker.verify.received import ReceivedCheck

NODE = NodeId("0x" + "ab" * 20)
STEPS = 40  # the prefill chunk, a full chunk of 32 decode steps, and 7 more


def _outputs(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = [torch.randn(1, 5 if step == 0 else 1, 576, generator=g) * 3 for step in range(STEPS)]
    for y in out:
        y[0, :, 507] *= 20  # a massive feature, as SmolLM2's residual stream has
    return out


def _run(cid: int, sent=lambda step, y: y):
    """The sender's receipt of its real outputs, and the receiver's check of what ``sent`` made of them."""
    rec, got, tokens = ReceiptRecorder(JobId(7), 1, 0, NODE, 0, 10), ReceivedCheck(JobId(7), 1, 0), []
    for step, y in enumerate(_outputs()):
        rec.add(step, y)
        enc = codec.encode(sent(step, y), cid, 64)
        got.add(step, enc, codec.decode(enc))
        tokens.append(100 + step)
        rec.seal(tokens)
        got.seal(tokens)
    return rec.receipt(tokens), got, tokens


@pytest.mark.parametrize("cid", [codec.FP32, codec.BF16, codec.INT8_ABSMAX, codec.INT8_OUTLIER])
def test_an_honest_sender_passes_whatever_the_codec_rounds(cid):
    receipt, got, tokens = _run(cid)
    got.check(receipt, tokens)  # raises if not
    assert len(got.chunks) == 3


@pytest.mark.parametrize("cid", [codec.FP32, codec.INT8_OUTLIER])
@pytest.mark.parametrize("at", [0, 17, 39])
def test_a_sender_that_sends_other_activations_than_its_receipt_describes_is_named(cid, at):
    """One step changed by 5% of its row's RMS (a few int8 steps): enough to blame the next hop's
    output on it if nobody checked, and caught here in whichever chunk it falls."""
    def frame(step, y):
        return y + 0.05 * y.pow(2).mean().sqrt() * torch.randn(y.shape, generator=torch.Generator().manual_seed(step)) \
            if step == at else y
    receipt, got, tokens = _run(cid, frame)
    with pytest.raises(ProtocolError, match=r"hop 0 \(0x.*\) sent activations its receipt does not describe"):
        got.check(receipt, tokens)


def test_with_the_lossless_codec_even_a_change_of_a_ten_thousandth_is_caught():
    """A lossy codec hides changes smaller than its own rounding step; fp32 hides none."""
    receipt, got, tokens = _run(codec.FP32, lambda step, y: y + 1e-4 * y.pow(2).mean().sqrt())
    with pytest.raises(ProtocolError, match="does not describe"):
        got.check(receipt, tokens)


def test_a_receipt_of_another_hop_or_length_is_refused():
    receipt, got, tokens = _run(codec.FP32)
    other = ReceiptRecorder(JobId(7), 1, 1, NODE, 10, 20)
    for step, y in enumerate(_outputs()):
        other.add(step, y)
        other.seal(tokens[: step + 1])
    with pytest.raises(ProtocolError, match="names job 7 replica 1 hop 1"):
        got.check(other.receipt(tokens), tokens)
    short = ReceiptRecorder(JobId(7), 1, 0, NODE, 0, 10)
    for step, y in enumerate(_outputs()[:3]):
        short.add(step, y)
        short.seal(tokens[: step + 1])
    with pytest.raises(ProtocolError, match="has 2 chunks; it sent 3"):
        got.check(short.receipt(tokens[:3]), tokens)
