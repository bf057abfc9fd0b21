"""Envelope encryption of stored fields: AES-256-GCM under one data key per person.

Sealed field (``seal_field`` output, stored as is)::

    offset  size  field
    0       1     version 0x01
    1       4     data key id (which of the person's data keys sealed it)
    5       12    nonce (random, 96 bits, NIST SP 800-38D §8.2.2)
    17      n     ciphertext
    17+n    16    tag

    aad = version (1) || data key id (4) || len(person id) (4, big endian)
          || person id (UTF-8) || field name (UTF-8)

The associated data binds a blob to its person and field, so a blob moved to another
person's or another field's slot does not open; the length prefix keeps ("ab", "c") and
("a", "bc") apart. The data key id tells "this person was erased and has a new key" apart
from "this blob was altered".

Sealing needs the person's data key: from the in-memory cache (no round trip) or from one
Redis call that reads it, or creates it on first use. Opening never creates a key.
Crypto-shredding (:meth:`Envelope.erase_person`) deletes the wrapped data key; every blob
it sealed, wherever copies live (backups, replicas, logs), can no longer be opened.

Two ways to get the key, and only one is safe across processes:

- *verified* — :meth:`Envelope.key_from_wrapped` with the wrapped key the caller read from
  Redis in the same round trip as the sealed data: the cached key is used only while it is
  still the stored one, so an erasure by any process is noticed at the next use. Serving
  code goes this way, through :class:`gateway.vault.profiles.SealedProfiles` (reads, and
  writes made conditional on the wrapped key by a script).
- *trusted* — :meth:`seal_field`, :meth:`open_field`, :meth:`seal_profile` and
  :meth:`open_profile` without ``key``: they trust this process's cache, so after an erasure
  by **another** process they keep sealing, and opening blobs of the erased key, until the
  entry expires (``cache_ttl``). For tests, benchmarks and one-process tools only.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import overload

from cryptography.exceptions import InvalidTag

from gateway.store import Store
from gateway.vault.cache import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_CACHE_TTL_SECONDS,
    DataKey,
    DataKeyCache,
)
from gateway.vault.datakeys import DataKeyStore
from gateway.vault.errors import DataKeyErasedError, SealedDataError
from gateway.vault.keyring import KeyRing

FIELD_VERSION = 1
_HEAD = 5
_NONCE = 12
_TAG = 16
MIN_SEALED_LENGTH = _HEAD + _NONCE + _TAG


def _aad(head: bytes, person_id: str, field: str) -> bytes:
    person = person_id.encode()
    return head + len(person).to_bytes(4, "big") + person + field.encode()


def _as_bytes(plaintext: bytes | str) -> bytes:
    return plaintext.encode() if isinstance(plaintext, str) else bytes(plaintext)


class Envelope:
    """Seals and opens a person's fields; erases a person by destroying their data key."""

    def __init__(self, store: Store, ring: KeyRing, *, cache_size: int = DEFAULT_CACHE_SIZE,
                 cache_ttl: float = DEFAULT_CACHE_TTL_SECONDS,
                 cache: DataKeyCache | None = None) -> None:
        self._keys = DataKeyStore(store, ring)
        self._cache = cache if cache is not None else DataKeyCache(cache_size, cache_ttl)

    @property
    def data_keys(self) -> DataKeyStore:
        return self._keys

    # -- data keys ---------------------------------------------------------------------

    def _sealing_key(self, person_id: str) -> DataKey:
        key = self._cache.get(person_id)
        if key is None:
            key = self._keys.get_or_create(person_id)
            self._cache.put(person_id, key)
        return key

    def _opening_key(self, person_id: str, data_key_id: int, field: str) -> DataKey:
        key = self._cache.get(person_id)
        if key is not None and key.data_key_id == data_key_id:
            return key
        key = self._keys.get(person_id)  # not cached, or cached before an erasure elsewhere
        if key is None:
            self._cache.discard(person_id)
            raise DataKeyErasedError(
                f"sealed field {field!r} cannot open: the person has no data key (erased)"
            )
        self._cache.put(person_id, key)
        if key.data_key_id != data_key_id:
            raise DataKeyErasedError(
                f"sealed field {field!r} cannot open: data key {data_key_id:08x} is not the person's"
                " (erased, or the blob is someone else's)"
            )
        return key

    @overload
    def key_from_wrapped(self, person_id: str, wrapped: bytes) -> DataKey: ...
    @overload
    def key_from_wrapped(self, person_id: str, wrapped: None) -> None: ...
    @overload
    def key_from_wrapped(self, person_id: str, wrapped: bytes | None) -> DataKey | None: ...

    def key_from_wrapped(self, person_id: str, wrapped: bytes | None) -> DataKey | None:
        """The person's data key given the wrapped key *as just read from Redis* (in the same
        round trip as the sealed data): the cached copy only if it was unwrapped from exactly
        these bytes (a changed data key id, or a rewrap, means unwrap anew — no round trip),
        so an erasure by another process takes effect at the next use, not at the end of the
        cache lifetime. None, and the cached copy dropped, when there is no wrapped key
        (erased, or never created)."""
        if wrapped is None:
            self._cache.discard(person_id)
            return None
        cached = self._cache.get(person_id)
        if cached is not None and cached.wrapped == wrapped:
            return cached
        key = self._keys.from_wrapped(person_id, wrapped)
        self._cache.put(person_id, key)
        return key

    def forget_unless_current(self, person_id: str, wrapped: bytes | None) -> None:
        """Drop the cached data key unless it is the stored ``wrapped`` one (read by the
        caller just now); never unwraps."""
        cached = self._cache.get(person_id)
        if cached is not None and (wrapped is None or cached.wrapped != wrapped):
            self._cache.discard(person_id)

    def forget(self, person_id: str) -> None:
        """Drop the cached data key (it proved stale)."""
        self._cache.discard(person_id)

    # -- one field ---------------------------------------------------------------------

    def seal_field(self, person_id: str, field: str, plaintext: bytes | str) -> bytes:
        """Encrypt ``plaintext`` (text as UTF-8) for ``field`` of ``person_id``.

        Trusts this process's cache: after an erasure by another process it may seal under
        the destroyed key until the entry expires. Tests and one-process tools only; store
        sealed data through a write conditional on the key (:class:`SealedProfiles`)."""
        return self._seal(self._sealing_key(person_id), person_id, field, _as_bytes(plaintext))

    def open_field(self, person_id: str, field: str, blob: bytes) -> bytes:
        """Decrypt a blob sealed for exactly this person and field.

        Raises :class:`DataKeyErasedError` after crypto-shredding and
        :class:`SealedDataError` when the blob was altered or belongs elsewhere.

        Trusts a cached key whose id is the blob's: after an erasure by another process it
        still opens until the entry expires (an erasure in this process, or a blob of
        another key id, is noticed at once). Tests and one-process tools only; serving code
        reads through :class:`SealedProfiles`, which verifies the key at every read.
        """
        data_key_id = self._parse(blob, field)
        return self._open(self._opening_key(person_id, data_key_id, field), person_id, field, blob)

    @staticmethod
    def _seal(key: DataKey, person_id: str, field: str, plaintext: bytes) -> bytes:
        head = bytes([FIELD_VERSION]) + key.data_key_id.to_bytes(4, "big")
        nonce = secrets.token_bytes(_NONCE)
        return head + nonce + key.cipher.encrypt(nonce, plaintext, _aad(head, person_id, field))

    @staticmethod
    def _parse(blob: bytes, field: str) -> int:
        if len(blob) < MIN_SEALED_LENGTH or blob[0] != FIELD_VERSION:
            raise SealedDataError(f"sealed field {field!r} is malformed or of an unknown version")
        return int.from_bytes(blob[1:_HEAD], "big")

    @staticmethod
    def _open(key: DataKey, person_id: str, field: str, blob: bytes) -> bytes:
        try:
            return key.cipher.decrypt(blob[_HEAD:_HEAD + _NONCE], blob[_HEAD + _NONCE:],
                                      _aad(blob[:_HEAD], person_id, field))
        except InvalidTag:
            raise SealedDataError(
                f"sealed field {field!r} does not open: altered, or sealed for another person or field"
            ) from None

    # -- a whole profile ---------------------------------------------------------------

    def seal_profile(self, person_id: str, fields: Mapping[str, bytes | str]) -> dict[str, bytes]:
        """Seal every field of a profile with at most one Redis round trip. Trusts the cache
        like :meth:`seal_field` (tests and tools only)."""
        return self.seal_profile_keyed(person_id, fields)[1]

    def seal_profile_keyed(self, person_id: str, fields: Mapping[str, bytes | str]
                           ) -> tuple[DataKey, dict[str, bytes]]:
        """Like :meth:`seal_profile`, also returning the data key used (with the wrapped key
        it came from), so that the write can be made conditional on that wrapped key still
        being stored (:meth:`SealedProfiles.save`, the only safe way to store the result)."""
        key = self._sealing_key(person_id)
        return key, {name: self._seal(key, person_id, name, _as_bytes(value))
                     for name, value in fields.items()}

    def open_profile(self, person_id: str, sealed: Mapping[str, bytes],
                     key: DataKey | None = None) -> dict[str, bytes]:
        """Open every field of a sealed profile.

        With ``key`` — the key returned by :meth:`key_from_wrapped`, verified against Redis
        in the round trip that read ``sealed`` — no round trip and no cache: a blob under any
        other data key id raises :class:`DataKeyErasedError` (it is not the person's current
        key). Without ``key``, at most one round trip, trusting the cache like
        :meth:`open_field` (tests and tools only)."""
        opened: dict[str, bytes] = {}
        current = key
        for name, blob in sealed.items():
            data_key_id = self._parse(blob, name)
            if current is None or current.data_key_id != data_key_id:
                if key is not None:
                    raise DataKeyErasedError(
                        f"sealed field {name!r} cannot open: data key {data_key_id:08x} is not the"
                        " person's (erased, or the blob is someone else's)"
                    )
                current = self._opening_key(person_id, data_key_id, name)
            opened[name] = self._open(current, person_id, name, blob)
        return opened

    # -- erasure -----------------------------------------------------------------------

    def erase_person(self, person_id: str, *also: str) -> bool:
        """Crypto-shred a person: delete the wrapped data key (with the keys ``also`` of the
        person's slot, in the same command) and forget the cached one.

        True if a data key existed. Other processes notice at their next verified use: every
        read of sealed data also reads the wrapped key (:meth:`key_from_wrapped`) and every
        profile write is conditional on it (SealedProfiles.save).
        """
        self._cache.discard(person_id)
        existed = self._keys.delete(person_id, *also)
        self._cache.discard(person_id)  # a concurrent seal may have cached it meanwhile
        return existed
