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
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag

from gateway.store import Store
from gateway.vault.cache import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_CACHE_TTL_SECONDS,
    DataKey,
    DataKeyCache,
)
from gateway.vault.datakeys import DataKeyStore, parse_header
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

    def key_from_wrapped(self, person_id: str, wrapped: bytes | None) -> DataKey | None:
        """The person's data key given the wrapped key *as just read from Redis* (read in the
        same round trip as the sealed data): the cached copy only if it is still the stored
        one, so an erasure by another process takes effect at the next use, not at the end of
        the cache lifetime. None (and the cached copy forgotten) when the key was erased."""
        if wrapped is None:
            self._cache.discard(person_id)
            return None
        header = parse_header(wrapped)
        cached = self._cache.get(person_id)
        if cached is not None and cached.data_key_id == header.data_key_id:
            return cached
        key = self._keys.from_wrapped(person_id, wrapped)
        self._cache.put(person_id, key)
        return key

    def forget(self, person_id: str) -> None:
        """Drop the cached data key (it proved stale)."""
        self._cache.discard(person_id)

    # -- one field ---------------------------------------------------------------------

    def seal_field(self, person_id: str, field: str, plaintext: bytes | str) -> bytes:
        """Encrypt ``plaintext`` (text as UTF-8) for ``field`` of ``person_id``."""
        return self._seal(self._sealing_key(person_id), person_id, field, _as_bytes(plaintext))

    def open_field(self, person_id: str, field: str, blob: bytes) -> bytes:
        """Decrypt a blob sealed for exactly this person and field.

        Raises :class:`DataKeyErasedError` after crypto-shredding and
        :class:`SealedDataError` when the blob was altered or belongs elsewhere.
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
        """Seal every field of a profile with at most one Redis round trip."""
        return self.seal_profile_keyed(person_id, fields)[1]

    def seal_profile_keyed(self, person_id: str, fields: Mapping[str, bytes | str]
                           ) -> tuple[int, dict[str, bytes]]:
        """Like :meth:`seal_profile`, also returning the data key id used, so that the write
        can be made conditional on that key still being the person's (SealedProfiles.save)."""
        key = self._sealing_key(person_id)
        return key.data_key_id, {name: self._seal(key, person_id, name, _as_bytes(value))
                                 for name, value in fields.items()}

    def open_profile(self, person_id: str, sealed: Mapping[str, bytes],
                     key: DataKey | None = None) -> dict[str, bytes]:
        """Open every field of a sealed profile with at most one Redis round trip (none with
        ``key``, the key returned by :meth:`key_from_wrapped`)."""
        opened: dict[str, bytes] = {}
        for name, blob in sealed.items():
            data_key_id = self._parse(blob, name)
            if key is None or key.data_key_id != data_key_id:
                key = self._opening_key(person_id, data_key_id, name)
            opened[name] = self._open(key, person_id, name, blob)
        return opened

    # -- erasure -----------------------------------------------------------------------

    def erase_person(self, person_id: str) -> bool:
        """Crypto-shred a person: delete the wrapped data key and forget the cached one.

        True if a data key existed. Other processes notice at their next use: every read of
        sealed data also reads the wrapped key (:meth:`key_from_wrapped`) and every profile
        write is conditional on it (SealedProfiles.save).
        """
        self._cache.discard(person_id)
        existed = self._keys.delete(person_id)
        self._cache.discard(person_id)  # a concurrent seal may have cached it meanwhile
        return existed
