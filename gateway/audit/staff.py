"""Compliance staff: declared in settings with a role, authenticated by bearer tokens that
the gateway knows only as SHA-256 digests.

Roles: ``auditor`` reads, queries, exports and downloads proofs; ``admin`` may also verify
the log and run key operations. Tokens are 256-bit random values (``gateway staff token``),
so a plain digest compared in constant time is enough (DESIGN.md, "Client secrets").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from gateway.config.staff import StaffMember

if TYPE_CHECKING:
    from gateway.store import Store

TOKEN_PREFIX = "cgs_"  # noqa: S105 - a prefix, not a secret; makes a leaked staff token recognisable to secret scanners


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_staff_token() -> tuple[str, str]:
    """A fresh token and its digest (the digest goes into the settings)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_digest(token)


class StaffDirectory:
    def __init__(self, members: list[StaffMember]) -> None:
        self._members = list(members)

    def authenticate(self, token: str | None) -> StaffMember | None:
        if not token or len(token) > 200:
            return None
        digest = token_digest(token)
        found = None
        for member in self._members:  # every digest is compared: no early exit on a match
            if hmac.compare_digest(member.token_sha256, digest):
                found = member
        return found

    def __len__(self) -> int:
        return len(self._members)

    def get(self, member_id: str | None) -> StaffMember | None:
        return next((m for m in self._members if m.id == member_id), None)


class StaffSessions:
    """Console sign-in: a staff member pastes their token once; the browser then holds a
    random session id (Redis keeps its digest, for ``ttl`` seconds)."""

    def __init__(self, store: Store, ttl: int = 3600) -> None:
        self._store = store
        self.ttl = ttl

    def start(self, member: StaffMember) -> str:
        session_id = secrets.token_urlsafe(32)
        self._store.redis.set(self._store.keys.staff_session(token_digest(session_id)), member.id,
                              ex=self.ttl)
        return session_id

    def member_id(self, session_id: str | None) -> str | None:
        if not session_id or len(session_id) > 128:
            return None
        raw = self._store.get(self._store.keys.staff_session(token_digest(session_id)))
        return raw.decode() if raw else None

    def end(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= 128:
            self._store.redis.delete(self._store.keys.staff_session(token_digest(session_id)))
