"""Checkpoints: the log's tree size and root, as a C2SP signed note (c2sp.org/tlog-checkpoint).

The note text is ``<origin>\\n<size>\\n<base64 root>\\n`` followed by optional extension lines;
the signature covers exactly that text. A checkpoint is what a person, a shop or a regulator
keeps: with it, an inclusion proof shows an event is in the log, and a consistency proof shows
a later checkpoint extends it rather than rewriting history (RFC 9162 §2.1.3, §2.1.4).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from gateway.audit.errors import CheckpointError
from gateway.audit.merkle import HASH_SIZE
from gateway.audit.note import NoteSigner, NoteVerifier, open_note, sign_note

_SIZE = re.compile(r"^(0|[1-9][0-9]*)$")  # decimal, no leading zeros (tlog-checkpoint)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text that gets signed, each line ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text (already verified; see :func:`verify_checkpoint`)."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise CheckpointError("a checkpoint has at least three non-empty lines")
        origin, size, root, *extensions = lines[:-1]
        if not _SIZE.match(size):
            raise CheckpointError("checkpoint size is not a decimal without leading zeros")
        try:
            digest = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise CheckpointError("checkpoint root is not base64") from None
        if len(digest) != HASH_SIZE:
            raise CheckpointError("checkpoint root is not a SHA-256 hash")
        return cls(origin, int(size), digest, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The signed note. The key name should equal the origin (tlog-checkpoint §Signatures)."""
    return sign_note(checkpoint.text(), [signer])


def verify_checkpoint(note: str, verifiers: list[NoteVerifier], origin: str | None = None) -> Checkpoint:
    """Open ``note`` with the trusted keys and parse it; ``origin``, if given, must match."""
    checkpoint = Checkpoint.parse(open_note(note, verifiers).text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
