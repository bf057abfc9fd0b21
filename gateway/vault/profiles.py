"""Profiles at rest: one Redis hash per person, every field sealed under the person's data key.

Field values are JSON-encoded, then sealed with the field's name in the associated data, so
a value moved to another field or person does not open. Nothing of the profile is stored in
clear; erasing the person's data key (crypto-shredding) makes every copy unreadable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import redis

from gateway.store import Store
from gateway.vault.envelope import Envelope


class SealedProfiles:
    def __init__(self, store: Store, envelope: Envelope) -> None:
        self._store = store
        self.envelope = envelope

    def _key(self, person_id: str) -> str:
        return self._store.keys.person_profile(person_id)

    def save(self, person_id: str, profile: Mapping[str, Any]) -> None:
        """Replace the stored profile (the provider's latest answer wins, fields it no longer
        gives are removed) in one transaction."""
        sealed = self.envelope.seal_profile(
            person_id, {name: json.dumps(value, ensure_ascii=False) for name, value in profile.items()
                        if value is not None})
        pipe = self._store.redis.pipeline(transaction=True)
        pipe.delete(self._key(person_id))
        if sealed:
            pipe.hset(self._key(person_id), mapping=sealed)  # type: ignore[arg-type]
        pipe.execute()

    def queue_read(self, pipe: redis.client.Pipeline, person_id: str) -> None:
        """Add the read to a caller's pipeline (userinfo reads profile and consent together)."""
        pipe.hgetall(self._key(person_id))

    def open(self, person_id: str, raw: Mapping[bytes, bytes] | None) -> dict[str, Any]:
        if not raw:
            return {}
        sealed = {name.decode(): blob for name, blob in raw.items()}
        return {name: json.loads(value) for name, value in
                self.envelope.open_profile(person_id, sealed).items()}

    def load(self, person_id: str) -> dict[str, Any]:
        raw = cast(Mapping[bytes, bytes], self._store.redis.hgetall(self._key(person_id)))
        return self.open(person_id, raw)

    def erase(self, person_id: str) -> None:
        """Crypto-shred the person, then drop the (now unreadable) profile hash."""
        self.envelope.erase_person(person_id)
        self._store.redis.delete(self._key(person_id))
