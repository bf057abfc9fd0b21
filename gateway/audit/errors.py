"""Errors of the audit log.

Integrity failures carry the index of the first entry found bad, so that an operator (or
``gateway audit verify``) can say *where* the log stops being trustworthy, not only *that*.
"""

from __future__ import annotations

from gateway.errors import GatewayError


class AuditError(GatewayError):
    """Base class of the audit log's errors."""


class AuditIntegrityError(AuditError):
    """The stored log disagrees with itself: an entry, a link or a tree hash was altered.

    ``index`` is the first index found bad (``None`` when the problem is not tied to one entry,
    for example a checkpoint whose signature does not verify).
    """

    def __init__(self, index: int | None, reason: str) -> None:
        where = "log" if index is None else f"entry {index}"
        super().__init__(f"audit {where}: {reason}")
        self.index = index
        self.reason = reason


class CheckpointError(AuditError):
    """A signed note or checkpoint is malformed, or no trusted key signed it (C2SP signed-note)."""


class ProofError(AuditError):
    """A tlog-proof is malformed or does not prove what it claims (C2SP tlog-proof)."""
