"""The master key that seals the key ring file, read from a setting or a file.

The master key never touches Redis or ``keys/``: it comes from the environment
(``GATEWAY_MASTER_KEY``, 32 bytes as base64 or hex) or from a file an orchestrator mounts
(``GATEWAY_MASTER_KEY_FILE``, holding the same text, or the 32 raw bytes). Keeping it
apart from ``keys/`` is what makes a copy of ``keys/`` alone useless (docs/threat-model.md).

Two keys are derived from it with HKDF-SHA256 (RFC 5869), so the value that lets the
loader tell "wrong master key" from "tampered file" is independent of the sealing key.
"""

from __future__ import annotations

import base64
import binascii
import string
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.vault.errors import MasterKeyInvalidError

MASTER_KEY_BYTES = 32
ENV_VALUE_NAME = "GATEWAY_MASTER_KEY"
ENV_FILE_NAME = "GATEWAY_MASTER_KEY_FILE"

_SEAL_INFO = b"consent-gateway key ring seal v1"
_CHECK_INFO = b"consent-gateway key ring check v1"
CHECK_BYTES = 8


def _derive(secret: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


class MasterKey:
    """32 secret bytes that never print (``repr`` and ``str`` hide them)."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) != MASTER_KEY_BYTES:
            raise MasterKeyInvalidError(
                f"invalid master key: expected {MASTER_KEY_BYTES} bytes, got {len(secret)}"
            )
        self._secret = secret

    def __repr__(self) -> str:
        return "MasterKey('**********')"

    __str__ = __repr__

    def sealing_key(self) -> bytes:
        """The AES-256-GCM key that seals the key ring file."""
        return _derive(self._secret, _SEAL_INFO, 32)

    def check_value(self) -> bytes:
        """A public 64-bit fingerprint written in the ring file's header, so that a wrong
        master key is reported as such rather than as a tampered file."""
        return _derive(self._secret, _CHECK_INFO, CHECK_BYTES)

    @classmethod
    def parse(cls, text: str, source: str = ENV_VALUE_NAME) -> MasterKey:
        """Decode 32 bytes written as 64 hex digits or as base64 (standard or URL-safe)."""
        value = text.strip()
        if len(value) == 2 * MASTER_KEY_BYTES and all(c in string.hexdigits for c in value):
            return cls(bytes.fromhex(value))
        try:
            padded = value + "=" * (-len(value) % 4)
            decoded = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != MASTER_KEY_BYTES:
            raise MasterKeyInvalidError(
                f"invalid {source}: expected {MASTER_KEY_BYTES} bytes as base64 or 64 hex digits"
            )
        return cls(decoded)


def load_master_key(value: str | None, file: Path | None) -> MasterKey | None:
    """The master key from a setting's value or from a file; ``None`` when neither is set.

    Giving both is refused: an operator who sets two sources cannot tell which one won.
    A file holds either exactly 32 raw bytes or the base64/hex text.
    """
    if value and file is not None:
        raise MasterKeyInvalidError(f"set only one of {ENV_VALUE_NAME} and {ENV_FILE_NAME}")
    if value:
        return MasterKey.parse(value)
    if file is None:
        return None
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise MasterKeyInvalidError(
            f"invalid {ENV_FILE_NAME}: cannot read {file} ({error.strerror})"
        ) from None
    if len(raw) == MASTER_KEY_BYTES:
        return MasterKey(raw)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MasterKeyInvalidError(
            f"invalid {ENV_FILE_NAME}: {file} holds neither 32 raw bytes nor base64/hex text"
        ) from None
    return MasterKey.parse(text, source=f"{ENV_FILE_NAME} ({file})")
