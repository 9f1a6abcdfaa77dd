"""Encrypted node keys (eth-account keystores) under ``$TESSERA_HOME/keys/``.

The password comes from ``TESSERA_KEY_PASSWORD`` or, in the CLI, a prompt. On a
devnet the well-known dev accounts may be used by index (``--account N``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eth_utils import to_checksum_address

from proto import paths
from proto.errors import ConfigError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

PASSWORD_ENV = "TESSERA_KEY_PASSWORD"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class KeyInfo:
    name: str
    address: str
    path: Path


def keys_dir() -> Path:
    d = paths.home() / "keys"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _path(name: str) -> Path:
    if not _NAME.match(name):
        raise ConfigError(f"key name {name!r} is invalid; use letters, digits, '.', '_' or '-'")
    return keys_dir() / f"{name}.json"


def save_key(name: str, private_key: str | bytes, password: str, overwrite: bool = False,
             scrypt_n: int | None = None) -> KeyInfo:
    """Encrypt ``private_key`` with ``password`` into the keystore ``name``.

    ``scrypt_n`` overrides the scrypt cost (default eth-account's 2**18; tests lower it).
    """
    from eth_account import Account  # lazy: eth-account costs seconds to import; `keys list` needs none of it

    path = _path(name)
    if path.exists() and not overwrite:
        raise ConfigError(f"a key named {name!r} exists at {path}; pick another name")
    try:
        acct = Account.from_key(private_key)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"that is not a valid private key ({exc}); give 32 bytes as 0x-prefixed hex") from None
    path.write_text(json.dumps(Account.encrypt(acct.key, password, iterations=scrypt_n)))
    path.chmod(0o600)
    return KeyInfo(name, acct.address, path)


def new_key(name: str, password: str) -> KeyInfo:
    """Create a fresh random key."""
    from eth_account import Account  # lazy: eth-account costs seconds to import; `keys list` needs none of it

    return save_key(name, Account.create().key, password)


def list_keys() -> list[KeyInfo]:
    out = []
    for p in sorted(keys_dir().glob("*.json")):
        try:
            addr = "0x" + json.loads(p.read_text())["address"].removeprefix("0x")
        except (ValueError, KeyError):
            continue
        out.append(KeyInfo(p.stem, to_checksum_address(addr), p))
    return out


def load_key(name: str, password: str | None = None) -> "LocalAccount":
    """Decrypt keystore ``name`` (password from the argument or ``TESSERA_KEY_PASSWORD``)."""
    from eth_account import Account  # lazy: eth-account costs seconds to import; `keys list` needs none of it

    path = _path(name)
    if not path.exists():
        raise ConfigError(f"no key named {name!r} in {keys_dir()}; create one with `tessera keys new {name}`")
    password = password if password is not None else os.environ.get(PASSWORD_ENV)
    if password is None:
        raise ConfigError(f"key {name!r} is encrypted; set {PASSWORD_ENV} or run interactively")
    try:
        return Account.from_key(Account.decrypt(path.read_text(), password))
    except ValueError:
        raise ConfigError(f"wrong password for key {name!r}") from None
