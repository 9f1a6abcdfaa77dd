"""Encrypted keystores: round trip, wrong password, bad names (no chain)."""

from __future__ import annotations

import pytest

from chain import keys
from chain.devnet import dev_key
from proto.errors import ConfigError


def test_keystore_round_trip_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.delenv(keys.PASSWORD_ENV, raising=False)
    info = keys.save_key("op", dev_key(1), "secret", scrypt_n=2**10)  # cheap KDF: tests only
    assert info.address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil dev account 1
    assert [k.address for k in keys.list_keys()] == [info.address]
    assert keys.load_key("op", "secret").address == info.address
    with pytest.raises(ConfigError, match="wrong password"):
        keys.load_key("op", "nope")
    with pytest.raises(ConfigError, match="TESSERA_KEY_PASSWORD"):
        keys.load_key("op")
    with pytest.raises(ConfigError, match="exists"):
        keys.save_key("op", dev_key(2), "x")
    with pytest.raises(ConfigError, match="invalid"):
        keys.save_key("../evil", dev_key(2), "x")
    with pytest.raises(ConfigError, match="keys new"):
        keys.load_key("missing", "x")
    assert oct(info.path.stat().st_mode & 0o777) == "0o600"
