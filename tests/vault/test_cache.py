"""The data-key cache is bounded in size and in time, and least recently used goes first."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.vault import DataKeyCache
from gateway.vault.cache import DataKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(number: int) -> DataKey:
    return DataKey(number, 0, AESGCM(bytes(32)))


def test_entries_expire_after_the_lifetime() -> None:
    clock = Clock()
    cache = DataKeyCache(10, ttl_seconds=300, clock=clock)
    cache.put("li-lei", _key(1))
    clock.now += 299
    assert cache.get("li-lei") == _key(1)
    clock.now += 1
    assert cache.get("li-lei") is None and len(cache) == 0


def test_the_least_recently_used_entry_is_evicted_at_the_size_bound() -> None:
    cache = DataKeyCache(2, ttl_seconds=300)
    cache.put("a", _key(1))
    cache.put("b", _key(2))
    cache.get("a")
    cache.put("c", _key(3))
    assert cache.get("b") is None
    assert cache.get("a") == _key(1) and cache.get("c") == _key(3)
    assert len(cache) == 2


def test_a_zero_size_or_lifetime_disables_the_cache() -> None:
    for cache in (DataKeyCache(0, 300), DataKeyCache(10, 0)):
        cache.put("a", _key(1))
        assert cache.get("a") is None


def test_discard_and_clear_forget_keys() -> None:
    cache = DataKeyCache()
    cache.put("a", _key(1))
    cache.put("b", _key(2))
    cache.discard("a")
    assert cache.get("a") is None and cache.get("b") is not None
    cache.clear()
    assert len(cache) == 0


def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        DataKeyCache(-1, 300)


def test_a_cached_key_never_prints_its_material() -> None:
    assert "cipher" not in repr(_key(1))
