"""Profiles at rest: one Redis hash per person, every field sealed under the person's data key.

Field values are JSON-encoded, then sealed with the field's name in the associated data, so
a value moved to another field or person does not open. Nothing of the profile is stored in
clear; erasing the person's data key (crypto-shredding) makes every copy unreadable.

Erasure reaches every process at once: a read fetches the wrapped data key with the sealed
fields (same slot, same round trip, 69 bytes), and a cached data key is used only while it
is still the stored one; a write is one script that stores the profile only if the data key
it was sealed with is still the person's and the person was not erased.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis

from gateway.store import Store
from gateway.vault.envelope import Envelope
from gateway.vault.errors import DataKeyErasedError

# KEYS[1] wrapped data key, KEYS[2] profile, KEYS[3] erasure marker. ARGV[1] the 4-byte id of
# the data key the fields were sealed with, then field/blob pairs.
_SAVE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local wrapped = redis.call('GET', KEYS[1])
if not wrapped or string.sub(wrapped, 2, 5) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""


class SealedProfiles:
    READ_COMMANDS = 2  # what queue_read adds to a caller's pipeline

    def __init__(self, store: Store, envelope: Envelope) -> None:
        self._store = store
        self.envelope = envelope
        self._save = store.redis.register_script(_SAVE)

    def _key(self, person_id: str) -> str:
        return self._store.keys.person_profile(person_id)

    def save(self, person_id: str, profile: Mapping[str, Any]) -> None:
        """Replace the stored profile (the provider's latest answer wins, fields it no longer
        gives are removed), in one script, only under the person's current data key."""
        values = {name: json.dumps(value, ensure_ascii=False) for name, value in profile.items()
                  if value is not None}
        keys = self._store.keys
        for _ in range(2):
            key_id, sealed = self.envelope.seal_profile_keyed(person_id, values)
            args: list[bytes | str] = [key_id.to_bytes(4, "big")]
            for name, blob in sealed.items():
                args += [name, blob]
            outcome = int(cast(int, self._save(
                keys=[keys.vault_data_key(person_id), self._key(person_id), keys.person_erased(person_id)],
                args=args)))
            if outcome == 1:
                return
            if outcome == -1:
                raise DataKeyErasedError("the person was erased: their profile is not stored again")
            self.envelope.forget(person_id)  # the cached key was erased elsewhere: seal anew
        raise DataKeyErasedError("the person's data key keeps changing; profile not stored")

    def queue_read(self, pipe: redis.client.Pipeline, person_id: str) -> None:
        """Add the read to a caller's pipeline: the sealed fields and the wrapped data key
        (``READ_COMMANDS`` commands; give their replies to :meth:`open_replies`)."""
        pipe.hgetall(self._key(person_id))
        pipe.get(self._store.keys.vault_data_key(person_id))

    def open_replies(self, person_id: str, replies: Sequence[Any]) -> dict[str, Any]:
        """Open what :meth:`queue_read` read; {} when there is nothing. Sealed fields whose
        person was erased (by any process: the wrapped key is gone) raise
        :class:`DataKeyErasedError`."""
        raw, wrapped = replies[0], replies[1]
        key = self.envelope.key_from_wrapped(person_id, wrapped if isinstance(wrapped, bytes) else None)
        if not raw:
            return {}
        if key is None:
            raise DataKeyErasedError("sealed profile cannot open: the person has no data key (erased)")
        sealed = {name.decode(): blob for name, blob in cast(Mapping[bytes, bytes], raw).items()}
        return {name: json.loads(value) for name, value in
                self.envelope.open_profile(person_id, sealed, key).items()}

    def open(self, person_id: str, raw: Mapping[bytes, bytes] | None) -> dict[str, Any]:
        """Open a sealed profile hash read elsewhere (a backup, a copy): reads the person's
        wrapped key now, so an erased person's copies never open."""
        wrapped = self._store.get(self._store.keys.vault_data_key(person_id))
        return self.open_replies(person_id, [raw, wrapped])

    def load(self, person_id: str) -> dict[str, Any]:
        pipe = self._store.redis.pipeline(transaction=True)
        self.queue_read(pipe, person_id)
        return self.open_replies(person_id, pipe.execute())

    def erase(self, person_id: str) -> None:
        """Crypto-shred the person, then drop the (now unreadable) profile hash."""
        self.envelope.erase_person(person_id)
        self._store.redis.delete(self._key(person_id))
