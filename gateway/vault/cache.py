"""A bounded in-memory cache of unwrapped data keys (least recently used, with a lifetime).

Why: sealing a field must cost at most one Redis round trip (reading the wrapped data
key), and a person's profile is read on every userinfo call; without a cache every call
would also unwrap. Why bounded: the cache holds plaintext data keys, so its size and
lifetime bound how much key material a memory dump of one process exposes.

The lifetime does **not** bound how long an erasure takes to reach this process. An entry
remembers the wrapped key it was unwrapped from (:attr:`DataKey.wrapped`), and serving code
never trusts it on its own: every read of sealed data also reads ``{p:<person>}:dek`` in the
same round trip and uses the entry only while it is byte for byte the stored wrapped key
(:meth:`Envelope.key_from_wrapped`); a missing wrapped key means erased and the entry is
dropped. Every profile write is a script that stores the fields only while the wrapped key
they were sealed under is still stored (:meth:`SealedProfiles.save`). So an erasure by
*another* process takes effect at this process's next use; erasure in this process removes
the entry at once. Only :meth:`Envelope.seal_field` / :meth:`Envelope.open_field` and the
profile methods without a verified key trust an entry unchecked (tests, benchmarks,
one-process tools; see their docstrings).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DEFAULT_CACHE_SIZE = 10_000
DEFAULT_CACHE_TTL_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class DataKey:
    """A person's unwrapped data key: its random id (written in every blob it seals), the
    key-encryption key it is wrapped under, the AES-GCM instance (material hidden), and the
    69-byte wrapped key it was unwrapped from — the version a use compares with the stored
    one (empty for a key made by hand: it then never matches a stored key)."""

    data_key_id: int
    kek_id: int
    cipher: AESGCM = field(repr=False, compare=False)
    wrapped: bytes = field(default=b"", repr=False, compare=False)


class DataKeyCache:
    """Thread-safe LRU of :class:`DataKey` by person id, entries expiring after ``ttl_seconds``."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_SIZE,
                 ttl_seconds: float = DEFAULT_CACHE_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 0 or ttl_seconds < 0:
            raise ValueError("cache size and lifetime must not be negative")
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[DataKey, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, person_id: str) -> DataKey | None:
        with self._lock:
            item = self._entries.get(person_id)
            if item is None:
                return None
            key, expires = item
            if self._clock() >= expires:
                del self._entries[person_id]
                return None
            self._entries.move_to_end(person_id)
            return key

    def put(self, person_id: str, key: DataKey) -> None:
        if self._max == 0 or self._ttl == 0:
            return
        with self._lock:
            self._entries[person_id] = (key, self._clock() + self._ttl)
            self._entries.move_to_end(person_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, person_id: str) -> None:
        with self._lock:
            self._entries.pop(person_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
