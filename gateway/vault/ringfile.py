"""The byte format of the key ring file ``keys/vault/kek.ring``.

Sealed (the only form outside demo mode)::

    offset  size  field
    0       4     magic  b"CGKR"
    4       1     format version  0x01
    5       8     master-key check value (HKDF of the master key, see masterkey.py)
    13      12    nonce (random)
    25      n+16  AES-256-GCM(sealing key, nonce, body, aad = bytes 0..12) = ciphertext || tag

Development (demo mode only, never sealed)::

    0       4     magic  b"CGKD"
    4       1     format version  0x01
    5       n     body

The body is UTF-8 JSON: ``{"format": 1, "keys": [{"id": "1a2b3c4d", "state": "primary",
"created": 1700000000, "demoted": null, "retired": null, "material": "<base64>"}]}``;
a retired key has no ``material``. The header is authenticated as associated data, so
changing the version or the check value fails like any other alteration.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.vault.errors import (
    DevelopmentKeyRingError,
    KeyRingTamperedError,
    MasterKeyMissingError,
    WrongMasterKeyError,
)
from gateway.vault.masterkey import CHECK_BYTES, ENV_FILE_NAME, ENV_VALUE_NAME, MasterKey

SEALED_MAGIC = b"CGKR"
PLAIN_MAGIC = b"CGKD"
FORMAT_VERSION = 1
_NONCE_BYTES = 12
_SEALED_HEADER = len(SEALED_MAGIC) + 1 + CHECK_BYTES
KEK_BYTES = 32
KEK_ID_BYTES = 4


class KekState(StrEnum):
    """Life cycle of a key-encryption key.

    ``primary``: wraps new data keys (exactly one). ``active``: unwraps what it wrapped
    before a rotation, wraps nothing new. ``retired``: its material is erased from the
    ring; its id stays on record so that data still naming it gets a precise error.
    """

    PRIMARY = "primary"
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class KekEntry:
    """One key-encryption key as stored in the ring (material hidden from ``repr``)."""

    kek_id: int
    state: KekState
    created: int
    demoted: int | None = None
    retired: int | None = None
    material: bytes | None = field(default=None, repr=False)

    @property
    def hex_id(self) -> str:
        return f"{self.kek_id:08x}"


def new_kek_id(taken: set[int]) -> int:
    """A random 32-bit id not used by any key of the ring, retired ones included (ids are
    the prefix of wrapped data, so an id is never reused)."""
    while True:
        candidate = int.from_bytes(secrets.token_bytes(KEK_ID_BYTES), "big")
        if candidate not in taken:
            return candidate


def _body(entries: list[KekEntry]) -> bytes:
    keys: list[dict[str, Any]] = []
    for entry in entries:
        item: dict[str, Any] = {
            "id": entry.hex_id, "state": entry.state.value, "created": entry.created,
            "demoted": entry.demoted, "retired": entry.retired,
        }
        if entry.material is not None:
            item["material"] = base64.b64encode(entry.material).decode("ascii")
        keys.append(item)
    return json.dumps({"format": FORMAT_VERSION, "keys": keys}, sort_keys=True).encode()


def encode_ring(entries: list[KekEntry], master: MasterKey | None) -> bytes:
    """The file bytes: sealed under ``master``, or the development form when it is None."""
    version = bytes([FORMAT_VERSION])
    if master is None:
        return PLAIN_MAGIC + version + _body(entries)
    header = SEALED_MAGIC + version + master.check_value()
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return header + nonce + AESGCM(master.sealing_key()).encrypt(nonce, _body(entries), header)


def decode_ring(data: bytes, master: MasterKey | None, *, demo: bool,
                path: Path) -> tuple[list[KekEntry], bool]:
    """Parse the file bytes; returns the entries and whether the file was sealed."""
    version = bytes([FORMAT_VERSION])
    if data[:4] == PLAIN_MAGIC:
        if not demo:
            raise DevelopmentKeyRingError(
                f"development key ring {path} is not sealed; refused outside demo mode"
            )
        if data[4:5] != version:
            raise KeyRingTamperedError(f"key ring {path}: unsupported format version")
        return _parse_body(data[5:], path), False
    if data[:4] != SEALED_MAGIC:
        raise KeyRingTamperedError(f"key ring {path}: not a key ring file")
    if master is None:
        raise MasterKeyMissingError(
            f"key ring {path} is sealed: set {ENV_VALUE_NAME} or {ENV_FILE_NAME}"
        )
    if data[4:5] != version:
        raise KeyRingTamperedError(f"key ring {path}: unsupported format version")
    header = data[:_SEALED_HEADER]
    if not hmac.compare_digest(header[5:], master.check_value()):
        raise WrongMasterKeyError(f"key ring {path} was sealed under a different master key")
    nonce = data[_SEALED_HEADER:_SEALED_HEADER + _NONCE_BYTES]
    try:
        body = AESGCM(master.sealing_key()).decrypt(nonce, data[_SEALED_HEADER + _NONCE_BYTES:], header)
    except (InvalidTag, ValueError):
        raise KeyRingTamperedError(f"key ring {path} fails authentication: altered or damaged") from None
    return _parse_body(body, path), True


def _parse_body(body: bytes, path: Path) -> list[KekEntry]:
    try:
        document = json.loads(body)
        if document["format"] != FORMAT_VERSION:
            raise ValueError("unsupported body format")
        entries = [_parse_entry(item) for item in document["keys"]]
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise KeyRingTamperedError(f"key ring {path} does not parse: {type(error).__name__}") from None
    _check_invariants(entries, path)
    return entries


def _parse_entry(item: dict[str, Any]) -> KekEntry:
    state = KekState(item["state"])
    material = base64.b64decode(item["material"], validate=True) if "material" in item else None
    if (state is KekState.RETIRED) != (material is None):
        raise ValueError("retired keys, and only they, lack material")
    if material is not None and len(material) != KEK_BYTES:
        raise ValueError("key material of the wrong size")
    kek_id = int(item["id"], 16)
    if not 0 <= kek_id < 2 ** (8 * KEK_ID_BYTES):
        raise ValueError("key id out of range")
    return KekEntry(
        kek_id=kek_id, state=state, created=int(item["created"]),
        demoted=item.get("demoted"), retired=item.get("retired"), material=material,
    )


def _check_invariants(entries: list[KekEntry], path: Path) -> None:
    primaries = sum(1 for e in entries if e.state is KekState.PRIMARY)
    ids = {e.kek_id for e in entries}
    if primaries != 1 or len(ids) != len(entries):
        raise KeyRingTamperedError(
            f"key ring {path} is inconsistent: needs exactly one primary key and unique ids"
        )
