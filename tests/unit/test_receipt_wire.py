"""Receipts on the wire: only CLOSE requests carry them, within bounds (no network)."""

from __future__ import annotations

import pytest

from proto.tessera.v1 import worker_pb2 as pb
from worker.ring.link import message
from worker.signing import Signer
from worker.wire import MAX_RECEIPT_BYTES, MAX_RECEIPTS, ZERO_ADDRESS, MessageError, check_request, domain_separator

KEY = "0x" + "11" * 32
DOMAIN = domain_separator(0, ZERO_ADDRESS)


def _close(receipts, kind=pb.KIND_CLOSE):
    msg = message(7, 0, 0, 3, kind, session=b"\1" * 32)
    msg.receipts.extend(receipts)
    return Signer(KEY).sign(msg, DOMAIN)


def test_a_close_with_receipts_within_bounds_passes():
    assert check_request(_close([pb.SignedReceipt(receipt=b"r" * 100, signature=b"s" * 65)] * 3), 1 << 20) == 7


@pytest.mark.parametrize("receipts, match", [
    ([pb.SignedReceipt(receipt=b"r", signature=b"s" * 65)] * (MAX_RECEIPTS + 1), "at most"),
    ([pb.SignedReceipt(receipt=b"r" * (MAX_RECEIPT_BYTES + 1), signature=b"s" * 65)], "bytes"),
    ([pb.SignedReceipt(receipt=b"r", signature=b"s" * 64)], "64-byte signature"),
])
def test_oversized_or_malformed_receipt_lists_are_refused(receipts, match):
    with pytest.raises(MessageError, match=match):
        check_request(_close(receipts), 1 << 20)


def test_receipts_on_an_open_are_refused():
    with pytest.raises(MessageError, match="only CLOSE"):
        check_request(_close([pb.SignedReceipt(receipt=b"r", signature=b"s" * 65)], pb.KIND_OPEN), 1 << 20)
