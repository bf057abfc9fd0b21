"""The archive boundary: where the live log starts once old entries went to archive files."""

from __future__ import annotations

from gateway.audit.errors import AuditError
from gateway.audit.log import AuditLog
from gateway.audit.merkle import root_plan
from gateway.audit.records import ZERO_HASH


def archived_size(log: AuditLog) -> int:
    """Entries below this index live in archive files, not in Redis."""
    raw = log.store.get(log.shard_keys.audit_archived())
    return int(raw) if raw else 0


def frontier(log: AuditLog, size: int) -> list[bytes]:
    """The stored hashes of the complete subtrees that make up ``[0, size)``."""
    hashes = log.tiles.get_subtrees(root_plan(size))
    if any(h is None for h in hashes):
        raise AuditError(f"the tree's stored hashes for [0, {size}) are incomplete")
    return [h for h in hashes if h is not None]


def previous_hash(log: AuditLog, size: int) -> bytes:
    """The hash the entry at ``size`` must link to (the chain's genesis value for 0)."""
    if size == 0:
        return ZERO_HASH
    (leaf,) = log.tiles.read_level(0, size - 1, size)
    if leaf is None:
        raise AuditError(f"the leaf hash of entry {size - 1} is missing")
    return leaf
