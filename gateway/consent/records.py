"""Consent records per person and shop.

At this stage a consent covers OIDC scopes; the consent-policy work replaces scopes with
purposes and fields under a versioned policy, in the same record.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from gateway.store import Store


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    client_id: str
    scopes: tuple[str, ...]
    granted_at: int

    def covers(self, scopes: set[str]) -> bool:
        return scopes <= set(self.scopes)


class ConsentService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def find(self, person_id: str, client_id: str) -> ConsentRecord | None:
        raw = self._store.redis.get(self._store.keys.person_consent(person_id, client_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return ConsentRecord(data["client_id"], tuple(data["scopes"]), data["granted_at"])

    def grant(self, person_id: str, client_id: str, scopes: set[str]) -> ConsentRecord:
        """Record consent to ``scopes``, added to whatever was granted before."""
        previous = self.find(person_id, client_id)
        granted = set(previous.scopes if previous else ()) | scopes
        record = ConsentRecord(client_id, tuple(sorted(granted)), int(time.time()))
        self._store.redis.set(
            self._store.keys.person_consent(person_id, client_id), json.dumps(asdict(record))
        )
        return record

    def withdraw(self, person_id: str, client_id: str) -> None:
        self._store.redis.delete(self._store.keys.person_consent(person_id, client_id))
