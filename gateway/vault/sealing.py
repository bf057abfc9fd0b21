"""Sealing key files under the key-encryption key ring (the same machinery as data keys).

The ID token signing keys in ``keys/signing/`` are stored sealed: whoever copies ``keys/``
without the master key cannot forge ID tokens. Byte format (``.sealed`` files)::

    0x01 | KEK id (4 bytes) | nonce (12 bytes) | AES-256-GCM(ciphertext || tag)

with associated data ``b"consent-gateway sealed file v1\\x00" || label || KEK id``, so a file
moved to another label (another kid) does not open. Rewrapping re-seals them under the
primary KEK; retiring a KEK counts them as still wrapped.
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.vault.errors import SealedDataError
from gateway.vault.keyring import KeyRing

SEALED_FILE_VERSION = 1
_AAD_PREFIX = b"consent-gateway sealed file v1\x00"


class KekSealer:
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    @staticmethod
    def _aad(label: str, kek_id: bytes) -> bytes:
        return _AAD_PREFIX + label.encode() + b"\x00" + kek_id

    def seal(self, data: bytes, label: str) -> bytes:
        kek_id, material = self.ring.primary()
        head = kek_id.to_bytes(4, "big")
        nonce = secrets.token_bytes(12)
        return (bytes([SEALED_FILE_VERSION]) + head + nonce
                + AESGCM(material).encrypt(nonce, data, self._aad(label, head)))

    def open(self, blob: bytes, label: str) -> bytes:
        if len(blob) < 1 + 4 + 12 + 16 or blob[0] != SEALED_FILE_VERSION:
            raise SealedDataError(f"sealed file {label!r} is malformed or of an unknown version")
        head, nonce = blob[1:5], blob[5:17]
        material = self.ring.material(int.from_bytes(head, "big"))
        try:
            return AESGCM(material).decrypt(nonce, blob[17:], self._aad(label, head))
        except InvalidTag:
            raise SealedDataError(f"sealed file {label!r} does not open (altered or moved)") from None

    @staticmethod
    def kek_of(blob: bytes) -> str:
        return blob[1:5].hex()
