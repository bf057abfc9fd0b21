"""Crypto-shredding: erasing a person destroys the data key; every copy of their blobs dies."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest

from gateway.store import Store
from gateway.vault import DataKeyErasedError, Envelope


def test_erased_person_blobs_remain_in_redis_but_no_longer_open(envelope: Envelope, store: Store) -> None:
    profile_key = store.keys.person_profile("li-lei")
    sealed = envelope.seal_profile("li-lei", {"phone": "13812345678", "email": "lilei@example.com"})
    for field, blob in sealed.items():
        store.redis.hset(profile_key, field, blob)
    assert envelope.erase_person("li-lei") is True
    assert store.get(store.keys.vault_data_key("li-lei")) is None
    stored = cast(dict[bytes, bytes], store.redis.hgetall(profile_key))
    left = {k.decode(): v for k, v in stored.items()}
    assert left == sealed  # the ciphertexts survive, e.g. in a backup ...
    for field, blob in left.items():
        with pytest.raises(DataKeyErasedError, match="erased"):  # ... and are useless
            envelope.open_field("li-lei", field, blob)


def test_erasure_is_seen_by_a_process_that_never_cached_the_key(
    envelope: Envelope, make_envelope: Callable[..., Envelope]
) -> None:
    blob = envelope.seal_field("li-lei", "phone", b"13812345678")
    envelope.erase_person("li-lei")
    with pytest.raises(DataKeyErasedError):
        make_envelope().open_field("li-lei", "phone", blob)


def test_a_new_sign_in_after_erasure_gets_a_fresh_data_key(envelope: Envelope, store: Store) -> None:
    old_blob = envelope.seal_field("li-lei", "phone", b"13812345678")
    old_wrapped = store.get(store.keys.vault_data_key("li-lei"))
    envelope.erase_person("li-lei")
    new_blob = envelope.seal_field("li-lei", "phone", b"13900000000")
    new_wrapped = store.get(store.keys.vault_data_key("li-lei"))
    assert new_wrapped is not None and old_wrapped is not None
    assert new_wrapped[1:5] != old_wrapped[1:5]  # a different data key id
    assert envelope.open_field("li-lei", "phone", new_blob) == b"13900000000"
    with pytest.raises(DataKeyErasedError, match="not the person's"):
        envelope.open_field("li-lei", "phone", old_blob)


def test_a_stale_cache_in_another_process_notices_a_new_data_key(
    envelope: Envelope, make_envelope: Callable[..., Envelope]
) -> None:
    other = make_envelope()
    other.open_field("li-lei", "phone", envelope.seal_field("li-lei", "phone", b"old"))  # cached
    envelope.erase_person("li-lei")
    fresh = envelope.seal_field("li-lei", "phone", b"new")
    assert other.open_field("li-lei", "phone", fresh) == b"new"


def test_erasing_a_person_without_a_data_key_reports_false(envelope: Envelope) -> None:
    assert envelope.erase_person("nobody") is False


def test_opening_never_creates_a_data_key(envelope: Envelope, store: Store) -> None:
    blob = envelope.seal_field("li-lei", "phone", b"x")
    with pytest.raises(DataKeyErasedError):
        envelope.open_field("han-meimei", "phone", blob)
    assert store.get(store.keys.vault_data_key("han-meimei")) is None
