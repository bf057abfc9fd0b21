"""Per-person data keys, wrapped under the primary key-encryption key and kept in Redis.

Wrapping is AES-256-GCM rather than AES-KW (RFC 3394), because GCM takes associated data:
the wrapped key is bound to its person and to the KEK id, so a wrapped key copied into
another person's slot does not unwrap. The price is a nonce: random 96-bit nonces allow
about 2^32 wraps per KEK (NIST SP 800-38D §8.3); a KEK wraps one key per person plus one per
rewrap, and rotation gives every KEK a fresh budget.

Value of ``{p:<person>}:dek`` (69 bytes)::

    offset  size  field
    0       1     version 0x01
    1       4     data key id (random; also written in every blob the key seals)
    5       4     KEK id (the ring's id of the wrapping key)
    9       12    nonce (random)
    21      48    AES-256-GCM(KEK, nonce, data key, aad) = 32-byte key || 16-byte tag

    aad = bytes 0..8 (version, data key id, KEK id) || person id (UTF-8)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.store import Store
from gateway.store.scripts import LuaScript
from gateway.vault.cache import DataKey
from gateway.vault.errors import SealedDataError
from gateway.vault.keyring import KeyRing

WRAP_VERSION = 1
DATA_KEY_BYTES = 32
_HEAD = 9
_NONCE = 12
WRAPPED_LENGTH = _HEAD + _NONCE + DATA_KEY_BYTES + 16
SCAN_BATCH = 500

# Get-or-create in one round trip. SET NX GET would do on Redis 7, but the embedded server
# is Redis 6.2, where NX and GET cannot be combined.
_GET_OR_SET = """
local value = redis.call('GET', KEYS[1])
if value then
  return value
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

# Replace a wrapped key only if it is still the one that was read: an erasure or another
# rewrap in between wins, never a stale write.
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class WrappedHeader:
    """The clear part of a wrapped data key."""

    data_key_id: int
    kek_id: int


def parse_header(wrapped: bytes) -> WrappedHeader:
    if len(wrapped) != WRAPPED_LENGTH or wrapped[0] != WRAP_VERSION:
        raise SealedDataError("wrapped data key is malformed or of an unknown version")
    return WrappedHeader(int.from_bytes(wrapped[1:5], "big"), int.from_bytes(wrapped[5:9], "big"))


def wrap(ring: KeyRing, person_id: str, data_key_id: int, material: bytes) -> bytes:
    kek_id, kek = ring.primary()
    head = bytes([WRAP_VERSION]) + data_key_id.to_bytes(4, "big") + kek_id.to_bytes(4, "big")
    nonce = secrets.token_bytes(_NONCE)
    return head + nonce + AESGCM(kek).encrypt(nonce, material, head + person_id.encode())


def unwrap(ring: KeyRing, person_id: str, wrapped: bytes) -> tuple[WrappedHeader, bytes]:
    """The data key material; raises for an unknown or retired KEK, or an altered key."""
    header = parse_header(wrapped)
    kek = ring.material(header.kek_id)
    try:
        material = AESGCM(kek).decrypt(wrapped[_HEAD:_HEAD + _NONCE], wrapped[_HEAD + _NONCE:],
                                       wrapped[:_HEAD] + person_id.encode())
    except InvalidTag:
        raise SealedDataError(
            f"wrapped data key under KEK {header.kek_id:08x} does not open: altered or moved"
        ) from None
    return header, material


def _as_data_key(header: WrappedHeader, material: bytes, wrapped: bytes) -> DataKey:
    return DataKey(header.data_key_id, header.kek_id, AESGCM(material), wrapped)


class DataKeyStore:
    """Reads, creates, deletes and re-wraps wrapped data keys in Redis."""

    def __init__(self, store: Store, ring: KeyRing) -> None:
        self._store = store
        self._ring = ring
        self._get_or_set = LuaScript(store.redis, _GET_OR_SET)
        self._compare_and_set = LuaScript(store.redis, _COMPARE_AND_SET)

    @property
    def ring(self) -> KeyRing:
        return self._ring

    @property
    def store(self) -> Store:
        return self._store

    def get_or_create(self, person_id: str) -> DataKey:
        """The person's data key, created on first use; one round trip either way."""
        material = secrets.token_bytes(DATA_KEY_BYTES)
        candidate = wrap(self._ring, person_id, int.from_bytes(secrets.token_bytes(4), "big"), material)
        stored = cast(bytes, self._get_or_set([self._store.keys.vault_data_key(person_id)], [candidate]))
        if stored == candidate:
            return _as_data_key(parse_header(candidate), material, candidate)
        return _as_data_key(*unwrap(self._ring, person_id, stored), stored)

    def from_wrapped(self, person_id: str, wrapped: bytes) -> DataKey:
        """Unwrap a wrapped key read by the caller (in its own pipeline)."""
        return _as_data_key(*unwrap(self._ring, person_id, wrapped), wrapped)

    def get(self, person_id: str) -> DataKey | None:
        """The person's data key, or None when there is none (never created, or erased)."""
        stored = self._store.get(self._store.keys.vault_data_key(person_id))
        if stored is None:
            return None
        return _as_data_key(*unwrap(self._ring, person_id, stored), stored)

    def delete(self, person_id: str, *also: str) -> bool:
        """Destroy the wrapped data key: everything it sealed becomes unreadable. ``also``:
        more keys of the person's slot deleted by the same command (atomically). True if
        the wrapped key existed."""
        dek = self._store.keys.vault_data_key(person_id)
        if not also:
            return bool(self._store.redis.delete(dek))
        pipe = self._store.redis.pipeline(transaction=True)
        pipe.exists(dek)
        pipe.delete(dek, *also)
        return bool(pipe.execute()[0])

    # -- walking all data keys (rewrap, retire): every primary of a cluster --------------

    def scan(self, cursor: int, count: int = SCAN_BATCH) -> tuple[int, dict[str, bytes]]:
        """One SCAN step: the next cursor and the wrapped keys found, by Redis key name."""
        next_cursor, names = self._store.scan_step(cursor, self._store.keys.vault_data_key_pattern(), count)
        if not names:
            return next_cursor, {}
        pipe = self._store.redis.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        values = cast(list[bytes | None], pipe.execute())
        found = {n.decode(): v for n, v in zip(names, values, strict=True) if isinstance(v, bytes)}
        return next_cursor, found

    def count_by_kek(self) -> dict[str, int]:
        """How many data keys each KEK wraps (hex id → count); a full SCAN of the key space."""
        counts: dict[str, int] = {}
        cursor = 0
        while True:
            cursor, found = self.scan(cursor)
            for value in found.values():
                try:
                    kek = f"{parse_header(value).kek_id:08x}"
                except SealedDataError:
                    kek = "malformed"
                counts[kek] = counts.get(kek, 0) + 1
            if cursor == 0:
                return counts

    def count_wrapped_under(self, kek_id: str) -> int:
        """Data keys still wrapped under ``kek_id``: the check :meth:`KeyRing.retire` needs."""
        return self.count_by_kek().get(kek_id, 0)

    def count(self) -> int:
        """How many data keys exist (a SCAN of key names only, for progress bars)."""
        total = 0
        cursor = 0
        while True:
            cursor, names = self._store.scan_step(cursor, self._store.keys.vault_data_key_pattern(),
                                                  SCAN_BATCH)
            total += len(names)
            if cursor == 0:
                return total

    def replace_if_unchanged(self, changes: list[tuple[str, bytes, bytes]]) -> int:
        """Compare-and-set each ``(redis key, old value, new value)`` in one pipeline;
        returns how many were replaced (an erasure in between leaves its key deleted)."""
        if not changes:
            return 0
        pipe = self._store.redis.pipeline(transaction=False)
        for redis_key, old, new in changes:
            self._compare_and_set.queue(pipe, [redis_key], [old, new])
        return sum(int(cast(int, reply)) for reply in pipe.execute())
