"""Proofs a person can take away: the c2sp.org/tlog-proof@v1 text format.

::

    c2sp.org/tlog-proof@v1
    extra <base64 of the canonical event>
    index <decimal>
    <base64 hash>            inclusion path, the leaf's sibling first (RFC 9162 §2.1.3)
    ...
                             (empty line)
    <signed checkpoint, verbatim>

The ``extra`` line carries the event's canonical bytes, so one file is enough to check that
the access was recorded; it is unauthenticated by itself, and is trusted only because its
hash, with the path, reproduces the signed root. A verifier needs nothing from us but the
log's published verifier key.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.audit.checkpoint import Checkpoint, verify_checkpoint
from gateway.audit.errors import AuditError, CheckpointError, ProofError
from gateway.audit.events import AuditEvent, NonCanonicalEvent, decode_event
from gateway.audit.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from gateway.audit.note import NoteVerifier

if TYPE_CHECKING:
    from gateway.audit.checkpointer import Checkpointer, SignedCheckpoint
    from gateway.audit.log import AuditLog

HEADER = "c2sp.org/tlog-proof@v1"
_INDEX = re.compile(r"^index (0|[1-9][0-9]*)$")
MAX_PATH = 64  # a tree of 2^64 leaves has a path of at most 64 hashes


@dataclass(frozen=True, slots=True)
class TlogProof:
    index: int
    path: tuple[bytes, ...]
    checkpoint_note: str
    extra: bytes | None = None

    def to_text(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {base64.b64encode(self.extra).decode()}")
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode() for h in self.path)
        return "\n".join(lines) + "\n\n" + self.checkpoint_note

    @classmethod
    def parse(cls, text: str) -> TlogProof:
        head, separator, note = text.partition("\n\n")
        lines = head.split("\n")
        if not separator or lines[0] != HEADER or len(lines) < 2:
            raise ProofError("not a c2sp.org/tlog-proof@v1 proof")
        position, extra = 1, None
        if lines[1].startswith("extra "):
            extra = _b64(lines[1].removeprefix("extra "), "extra data")
            position = 2
        match = _INDEX.match(lines[position]) if position < len(lines) else None
        if match is None:
            raise ProofError("proof has no valid index line")
        path = tuple(_b64(line, "inclusion hash") for line in lines[position + 1 :])
        if len(path) > MAX_PATH or any(len(h) != HASH_SIZE for h in path):
            raise ProofError("inclusion path holds something other than SHA-256 hashes")
        return cls(int(match.group(1)), path, note, extra)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ProofError(f"{what} is not base64") from None


def prove(log: AuditLog, index: int, signed: SignedCheckpoint, event: bytes | None = None) -> TlogProof:
    """The proof that entry ``index`` is in the tree ``signed`` commits to.

    ``event`` gives the canonical event of an archived entry (from its archive file): the
    tree's hashes stay in Redis, so the path is computed all the same, and a wrong event
    simply fails verification.
    """
    size = signed.checkpoint.size
    if not 0 <= index < size:
        raise ProofError(f"the checkpoint at size {size} does not cover entry {index}")
    if event is None:
        entry = log.read_entries([index])[0]
        if isinstance(entry, str):
            raise AuditError(f"entry {index}: {entry}")
        event = entry.event
    return TlogProof(index, tuple(log.inclusion_proof(index, size)), signed.note, event)


def prove_latest(checkpointer: Checkpointer, index: int) -> TlogProof:
    """Prove ``index`` against the latest checkpoint, signing a new one if it does not cover it."""
    signed = checkpointer.latest()
    if signed is None or signed.checkpoint.size <= index:
        signed = checkpointer.checkpoint() or checkpointer.latest()
    if signed is None:
        raise ProofError("no checkpoint could be signed")
    return prove(checkpointer.log, index, signed)


def verify_proof(
    text: str, verifiers: list[NoteVerifier], origin: str, event: bytes | None = None
) -> tuple[Checkpoint, AuditEvent]:
    """Check a tlog-proof offline; returns the checkpoint and the event it proves.

    ``event`` is the canonical event the caller expects; without it the proof's extra data is
    used. Raises :class:`ProofError` unless the checkpoint is signed by a trusted key for
    ``origin`` and the path leads from the event's leaf hash to its root (RFC 9162 §2.1.3.2).
    """
    proof = TlogProof.parse(text)
    data = event if event is not None else proof.extra
    if data is None:
        raise ProofError("no event given and the proof carries none")
    try:
        checkpoint = verify_checkpoint(proof.checkpoint_note, verifiers, origin)
        decoded = decode_event(data)
    except (CheckpointError, NonCanonicalEvent) as error:
        raise ProofError(str(error)) from None
    if not verify_inclusion(leaf_hash(data), proof.index, checkpoint.size, proof.path, checkpoint.root):
        raise ProofError("the inclusion path does not lead to the checkpoint's root")
    return checkpoint, decoded
