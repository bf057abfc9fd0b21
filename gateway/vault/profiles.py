"""Profiles at rest: one Redis hash per person, sealed under the person's data key.

The whole profile (a JSON object, field name to value) is sealed as one blob, stored as the
hash's only field :data:`WHOLE_PROFILE`, with that name and the person in the associated
data, so it opens only as this person's profile. One blob instead of one per field saves
the 33 bytes of version, key id, nonce and tag per field and, since most sealed fields
exceed Redis's 64-byte listpack limit anyway, a hash of one entry instead of a hash table
of many: about 450 instead of 800 bytes for a profile of eight fields. Hashes written
before (every field sealed on its own, JSON-encoded, with its name in the associated data)
are still read; the next save replaces them. Nothing of the profile is stored in clear;
erasing the person's data key (crypto-shredding) makes every copy unreadable.

Erasure reaches every process at once, with no extra round trip:

- a read fetches the wrapped data key ``{p:<person>}:dek`` with the sealed fields (same
  slot, same pipeline, one more GET of 69 bytes) and uses a cached data key only while it
  was unwrapped from exactly those bytes; no wrapped key means erased: the cached key is
  dropped and nothing opens;
- a write is one script that stores the profile only if the wrapped key it was sealed
  under is still stored and the person is not marked erased; otherwise the cached key is
  dropped and the profile sealed once more under a fresh key, or refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import redis

from gateway.store import Store
from gateway.vault.envelope import Envelope
from gateway.vault.errors import DataKeyErasedError, ProfileWriteConflictError

# KEYS[1] wrapped data key, KEYS[2] profile, KEYS[3] erasure marker (all in the person's
# slot). ARGV[1] the wrapped data key (69 bytes) the profile was sealed under, then
# field/blob pairs (one: WHOLE_PROFILE and the sealed profile; none for an empty one).
# -1: the person is marked erased; 0: the wrapped key changed (erased, re-created or
# rewrapped) since it was read; 1: stored.
_SAVE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""

_SAVE_ATTEMPTS = 2

WHOLE_PROFILE = "*"
"""The one field of a profile sealed whole; never a profile field's name (save refuses it)."""


class SealedProfiles:
    """Reads and writes ``{p:<person>}:profile`` under a data key verified at every use."""

    READ_COMMANDS: ClassVar[int] = 2
    """How many commands :meth:`queue_read` adds to a caller's pipeline (HGETALL, GET)."""

    def __init__(self, store: Store, envelope: Envelope) -> None:
        self._store = store
        self.envelope = envelope
        self._save = store.redis.register_script(_SAVE)

    def _key(self, person_id: str) -> str:
        return self._store.keys.person_profile(person_id)

    # -- writing -----------------------------------------------------------------------

    def save(self, person_id: str, profile: Mapping[str, Any]) -> None:
        """Replace the stored profile (the provider's latest answer wins, fields it no longer
        gives are removed) in one script that stores it only while the wrapped data key it
        was sealed under is still the stored one: one round trip with the key cached, two
        without. If the key changed meanwhile (erased by any process, re-created, rewrapped)
        the cached key is dropped and the profile sealed once more under the key
        get-or-create returns (a fresh one after an erasure). Raises
        :class:`DataKeyErasedError` if the person is marked erased (nothing is stored) and
        :class:`ProfileWriteConflictError` if the key changed during both attempts."""
        if WHOLE_PROFILE in profile:
            raise ValueError(f"{WHOLE_PROFILE!r} cannot name a profile field")
        present = {name: value for name, value in profile.items() if value is not None}
        values = {WHOLE_PROFILE: json.dumps(present, ensure_ascii=False)} if present else {}
        keys = self._store.keys
        redis_keys = [keys.vault_data_key(person_id), self._key(person_id), keys.person_erased(person_id)]
        for _ in range(_SAVE_ATTEMPTS):
            key, sealed = self.envelope.seal_profile_keyed(person_id, values)
            args: list[bytes | str] = [key.wrapped]
            for name, blob in sealed.items():
                args += [name, blob]
            outcome = int(cast(int, self._save(keys=redis_keys, args=args)))
            if outcome == 1:
                return
            self.envelope.forget(person_id)  # the cached key is not the stored one
            if outcome == -1:
                raise DataKeyErasedError("the person was erased: their profile is not stored again")
        raise ProfileWriteConflictError(
            "the person's data key changed during every attempt; profile not stored"
        )

    # -- reading -----------------------------------------------------------------------

    def queue_read(self, pipe: redis.client.Pipeline, person_id: str) -> None:
        """Add the read to a caller's pipeline (or MULTI): the sealed fields, then the wrapped
        data key — :attr:`READ_COMMANDS` commands, same slot, no extra round trip. Give
        exactly their replies, in order, to :meth:`open_replies`."""
        pipe.hgetall(self._key(person_id))
        pipe.get(self._store.keys.vault_data_key(person_id))

    def open_replies(self, person_id: str, replies: Sequence[Any]) -> dict[str, Any]:
        """Open what :meth:`queue_read` read (its :attr:`READ_COMMANDS` replies, in order).

        {} when there is no profile, and {} when there is no wrapped data key: the person
        was erased (by any process) — the cached data key is dropped and nothing opens,
        whatever this process had cached. A field sealed under another data key than the
        stored one raises :class:`DataKeyErasedError`; an altered one,
        :class:`SealedDataError`."""
        if len(replies) != self.READ_COMMANDS:
            raise ValueError(f"open_replies takes the {self.READ_COMMANDS} replies of queue_read,"
                             f" got {len(replies)}")
        raw, wrapped = replies
        return self._open(person_id, raw, wrapped if isinstance(wrapped, bytes) else None,
                          erased_raises=False)

    def load(self, person_id: str) -> dict[str, Any]:
        """Read and open the person's profile: one round trip (a MULTI of :meth:`queue_read`),
        verified like :meth:`open_replies` ({} when erased)."""
        pipe = self._store.redis.pipeline(transaction=True)
        self.queue_read(pipe, person_id)
        return self.open_replies(person_id, pipe.execute())

    def open(self, person_id: str, raw: Mapping[bytes, bytes] | None) -> dict[str, Any]:
        """Open a sealed profile hash read elsewhere (a backup, a copy): reads the person's
        wrapped key now (one GET) and verifies against it, so an erased person's copies never
        open — a non-empty copy of an erased person raises :class:`DataKeyErasedError`."""
        wrapped = self._store.get(self._store.keys.vault_data_key(person_id))
        return self._open(person_id, raw, wrapped, erased_raises=True)

    def _open(self, person_id: str, raw: Mapping[bytes, bytes] | None, wrapped: bytes | None,
              *, erased_raises: bool) -> dict[str, Any]:
        if wrapped is None:
            self.envelope.forget(person_id)
            if raw and erased_raises:
                raise DataKeyErasedError("sealed profile cannot open: the person has no data key (erased)")
            return {}
        if not raw:
            self.envelope.forget_unless_current(person_id, wrapped)
            return {}
        key = self.envelope.key_from_wrapped(person_id, wrapped)
        sealed = {name.decode(): blob for name, blob in raw.items()}
        opened = self.envelope.open_profile(person_id, sealed, key)
        if set(opened) == {WHOLE_PROFILE}:
            return cast(dict[str, Any], json.loads(opened[WHOLE_PROFILE]))
        # Written before profiles were sealed whole: one sealed JSON value per field.
        return {name: json.loads(value) for name, value in opened.items()}

    # -- erasure -----------------------------------------------------------------------

    def erase(self, person_id: str) -> None:
        """Crypto-shred the person and drop the (now unreadable) profile hash, in one command;
        every process's next read or write of the profile sees it (see the module doc)."""
        self.envelope.erase_person(person_id, self._key(person_id))
