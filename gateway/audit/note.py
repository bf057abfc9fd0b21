"""C2SP signed notes with Ed25519 (c2sp.org/signed-note).

A note is text ending in a newline, a blank line, then signature lines
``— <key name> <base64(4-byte key id || signature)>``. The key id is the first four bytes of
``SHA-256(key name || 0x0A || 0x01 || public key)``; a verifier key is published as
``<name>+<key id, 8 hex digits>+<base64(0x01 || public key)>``.

Verification follows the specification's rules: signatures from unknown keys are ignored
(that is how witnesses cosign and keys rotate), a known key whose signature fails rejects the
whole note, and a note that no known key signed is rejected — never accepted by default.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit.errors import CheckpointError

ED25519_TYPE = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space
MAX_SIGNATURES = 100  # the spec asks verifiers to cap signatures and to accept at least 16
MAX_NOTE_BYTES = 1 << 20


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4] (signed-note, Ed25519)."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + public_key).digest()[:4]


def _check_name(name: str) -> None:
    # Key names are non-empty and contain neither Unicode spaces nor "+" (signed-note §Format).
    if not name or "+" in name or any(c.isspace() for c in name):
        raise CheckpointError(f"invalid note key name {name!r}")


def _check_text(text: str) -> None:
    if not text.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in text):
        raise CheckpointError("note text must end in a newline and hold no control characters")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted public key, with the name it signs under."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @classmethod
    def from_string(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key id>+<base64(0x01 || key)>``, checking the id against the key."""
        name, _, rest = vkey.partition("+")
        hex_id, _, encoded = rest.partition("+")
        _check_name(name)
        try:
            raw = base64.b64decode(encoded, validate=True)
            claimed = bytes.fromhex(hex_id) if len(hex_id) == 8 else b""
        except (binascii.Error, ValueError):
            raise CheckpointError("malformed verifier key") from None
        if len(raw) != 33 or raw[:1] != ED25519_TYPE:
            raise CheckpointError("verifier key is not an Ed25519 signed-note key")
        verifier = cls(name, raw[1:])
        if claimed != verifier.key_id:
            raise CheckpointError("verifier key id does not match its name and key")
        return verifier

    def to_string(self) -> str:
        encoded = base64.b64encode(ED25519_TYPE + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, text)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 private key and its key name. The key never appears in ``repr``."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return NoteVerifier(self.name, raw)

    def signature_line(self, text: str) -> str:
        _check_text(text)
        blob = self.verifier.key_id + self.private_key.sign(text.encode())
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


def sign_note(text: str, signers: list[NoteSigner]) -> str:
    """The signed note: ``text``, a blank line, one signature line per signer."""
    if not signers:
        raise CheckpointError("a note needs at least one signer")
    return text + "\n" + "".join(signer.signature_line(text) for signer in signers)


@dataclass(frozen=True, slots=True)
class OpenedNote:
    text: str
    signed_by: tuple[NoteVerifier, ...]  # the known keys whose signatures verified


def _split(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    if len(note.encode()) > MAX_NOTE_BYTES or not note.endswith("\n"):
        raise CheckpointError("malformed note")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("note holds control characters")
    cut = note.rfind("\n\n")  # the last blank line separates text from signatures
    if cut < 0:
        raise CheckpointError("note has no signature block")
    text, lines = note[: cut + 1], note[cut + 2 :].splitlines()
    if not lines or len(lines) > MAX_SIGNATURES:
        raise CheckpointError("note has no signatures, or too many")
    signatures: list[tuple[str, bytes]] = []
    for line in lines:
        name, _, encoded = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
        if not line.startswith(SIGNATURE_PREFIX) or " " in encoded:
            raise CheckpointError("malformed signature line")
        _check_name(name)
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CheckpointError("signature is not base64") from None
        if len(blob) < 5:
            raise CheckpointError("signature too short")
        signatures.append((name, blob))
    return text, signatures


def open_note(note: str, verifiers: list[NoteVerifier]) -> OpenedNote:
    """Parse and verify a signed note against the trusted ``verifiers``."""
    text, signatures = _split(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[NoteVerifier] = []
    for name, blob in signatures:
        verifier = known.get((name, blob[:4]))
        if verifier is None:
            continue  # unknown key: ignored, as the specification requires
        if not verifier.verify(text.encode(), blob[4:]):
            raise CheckpointError(f"signature by {name} does not verify")
        if verifier not in verified:
            verified.append(verifier)
    if not verified:
        raise CheckpointError("no trusted key signed the note")
    return OpenedNote(text, tuple(verified))
