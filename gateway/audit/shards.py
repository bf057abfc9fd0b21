"""Which audit log shard an event belongs to, and what each shard is called.

With ``audit_shards = K`` the gateway keeps K independent logs, each in its own Redis slot with
its own chain, tree, indexes and checkpoints, so appends spread over K cluster nodes. A
person's events always go to the same shard — a plain hash of the person id, modulo K (K and
the ids are no secret, so no key is needed) — which keeps one person's history, queries and
inclusion proofs inside one log. Events that name no person (policy loads, key rotations,
staff queries without a person) go to shard 0.

K is fixed for a log's lifetime: another K sends a person's new events to another shard.
Shard 0 is the log as it was before sharding (same keys, same origin), so K = 1 is exactly
the unsharded layout.
"""

from __future__ import annotations

import hashlib

from gateway.audit.events import AuditEvent


def shard_of_person(person: str, shards: int) -> int:
    """The shard holding every event of ``person``: the first 8 bytes of SHA-256(id), mod K."""
    if shards < 1:
        raise ValueError("there is at least one audit shard")
    digest = hashlib.sha256(person.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def shard_of_event(event: AuditEvent, shards: int) -> int:
    """The shard ``event`` is appended to: its person's, or shard 0 without a person."""
    return 0 if event.person is None else shard_of_person(event.person, shards)


def shard_origin(origin: str, shard: int) -> str:
    """The checkpoint origin of one shard: the log's origin for shard 0, ``<origin>/<shard>``
    for the others (all signed by the one audit key, named by the log's origin)."""
    return origin if shard == 0 else f"{origin}/{shard}"
