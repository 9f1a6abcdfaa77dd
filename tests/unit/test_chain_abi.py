"""Custom errors decode from the compiled ABIs into messages that say what to do (no chain)."""

from __future__ import annotations

from eth_abi import encode

from chain.abi import HINTS, _type_str, decode_revert, error_table
from proto.errors import ChainError, ContractError

SAMPLE = {"address": "0x" + "ab" * 20, "uint256": 7, "uint16": 3, "uint8": 2, "bytes32": b"\x01" * 32,
          "string": "why", "bytes4": b"\0" * 4, "uint32": 9, "uint64": 9, "uint96": 9, "uint128": 9, "bool": True}


def test_every_contract_error_decodes_with_a_hint():
    table = error_table()
    assert len(table) >= 40
    for selector, entry in table.items():
        types = [_type_str(i) for i in entry["inputs"]]
        exc = decode_revert(selector + encode(types, [SAMPLE[t] for t in types]))
        assert isinstance(exc, ContractError) and exc.name == entry["name"]
        assert set(exc.args_by_name) == {i["name"] for i in entry["inputs"]}
        assert entry["name"] in HINTS, f"{entry['name']} needs a hint telling the user what to do"
        assert "{" not in str(exc), f"hint of {entry['name']} names a missing argument: {exc}"


def test_stake_hint_speaks_eth():
    (sel,) = [s for s, e in error_table().items() if e["name"] == "NodeStakeTooLow"]
    exc = decode_revert("0x" + (sel + encode(["uint256", "uint256"], [5 * 10**17, 10**18])).hex())
    assert "stake at least 1 ETH" in str(exc) and exc.args_by_name == {"stake": 5 * 10**17, "minimum": 10**18}


def test_plain_and_empty_reverts():
    exc = decode_revert(bytes.fromhex("08c379a0") + encode(["string"], ["boom"]))
    assert type(exc) is ChainError and "boom" in str(exc)
    assert "without a reason" in str(decode_revert(b""))
    assert "unknown error" in str(decode_revert(b"\xde\xad\xbe\xef"))

