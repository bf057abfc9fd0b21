"""The stored profile: sealed whole in one hash entry; hashes of one sealed blob per field,
as written before, are still read and replaced at the next save."""

from __future__ import annotations

import json
from typing import cast

import pytest

from gateway.store import Store
from gateway.vault import Envelope, SealedDataError
from gateway.vault.profiles import WHOLE_PROFILE, SealedProfiles

PROFILE = {"email": "lilei@example.com", "nickname": "李雷", "avatar": "https://example.com/a/李雷.png",
           "address": {"locality": "深圳", "region": "CN-GD"}}


def stored(store: Store, person: str) -> dict[bytes, bytes]:
    return cast(dict[bytes, bytes], store.redis.hgetall(store.keys.person_profile(person)))


def write_field_by_field(store: Store, envelope: Envelope, person: str, profile: dict[str, object]) -> None:
    """As SealedProfiles.save wrote a profile before it was sealed whole."""
    sealed = envelope.seal_profile(person, {k: json.dumps(v, ensure_ascii=False) for k, v in profile.items()})
    for name, blob in sealed.items():
        store.redis.hset(store.keys.person_profile(person), name, blob)


def test_a_profile_is_one_sealed_entry_with_nothing_in_clear(store: Store, envelope: Envelope) -> None:
    profiles = SealedProfiles(store, envelope)
    profiles.save("li-lei", PROFILE | {"gender": None})
    raw = stored(store, "li-lei")
    assert list(raw) == [WHOLE_PROFILE.encode()]
    (blob,) = raw.values()
    for value in ("lilei", "李雷".encode(), b"example.com", "深圳".encode()):
        assert (value.encode() if isinstance(value, str) else value) not in blob
    assert profiles.load("li-lei") == PROFILE
    # Smaller in Redis than the fields sealed one by one (the layout before).
    write_field_by_field(store, envelope, "han-meimei", PROFILE)
    whole, by_field = (store.redis.memory_usage(store.keys.person_profile(p), samples=0)
                       for p in ("li-lei", "han-meimei"))
    assert whole is not None and by_field is not None and whole < by_field * 0.75


def test_a_sealed_profile_opens_only_as_its_own_persons(store: Store, envelope: Envelope) -> None:
    profiles = SealedProfiles(store, envelope)
    profiles.save("li-lei", PROFILE)
    profiles.save("han-meimei", {"email": "han@example.com"})
    with pytest.raises(SealedDataError):  # li-lei's blob in han-meimei's hash
        profiles.open("han-meimei", stored(store, "li-lei"))
    # A field sealed on its own, put under the whole profile's name, does not open either.
    single = envelope.seal_field("li-lei", "email", json.dumps("x@example.com"))
    with pytest.raises(SealedDataError):
        profiles.open("li-lei", {WHOLE_PROFILE.encode(): single})


def test_a_profile_sealed_field_by_field_is_read_then_replaced(store: Store, envelope: Envelope) -> None:
    write_field_by_field(store, envelope, "li-lei", PROFILE)
    profiles = SealedProfiles(store, envelope)
    assert profiles.load("li-lei") == PROFILE
    profiles.save("li-lei", PROFILE | {"nickname": "Li Lei"})
    assert list(stored(store, "li-lei")) == [WHOLE_PROFILE.encode()]
    assert profiles.load("li-lei") == PROFILE | {"nickname": "Li Lei"}


def test_an_empty_profile_stores_nothing_and_a_field_named_like_the_entry_is_refused(
        store: Store, envelope: Envelope) -> None:
    profiles = SealedProfiles(store, envelope)
    profiles.save("li-lei", PROFILE)
    profiles.save("li-lei", {"email": None})
    assert stored(store, "li-lei") == {} and profiles.load("li-lei") == {}
    with pytest.raises(ValueError, match="cannot name a profile field"):
        profiles.save("li-lei", {WHOLE_PROFILE: "x"})
