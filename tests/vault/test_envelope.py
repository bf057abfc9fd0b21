"""Sealing fields: round trips, tampering, associated data, key ids, round trips to Redis."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import Store
from gateway.vault import (
    Envelope,
    KeyRing,
    RetiredKeyError,
    SealedDataError,
    UnknownKeyError,
)
from gateway.vault.cache import DataKey
from gateway.vault.envelope import MIN_SEALED_LENGTH
from tests.vault.conftest import CommandCounter

# The envelope and its Redis prefix are shared by the examples of one test; every example
# uses its own person id or field, so they never interfere.
shared_fixtures = settings(suppress_health_check=[HealthCheck.function_scoped_fixture],
                           max_examples=75, deadline=None)
person_ids = st.text(min_size=1, max_size=40)
field_names = st.text(max_size=40)


@shared_fixtures
@given(person=person_ids, field=field_names, plaintext=st.binary(max_size=2048))
def test_any_bytes_round_trip_for_any_person_and_field(envelope: Envelope, person: str, field: str,
                                                       plaintext: bytes) -> None:
    blob = envelope.seal_field(person, field, plaintext)
    assert envelope.open_field(person, field, blob) == plaintext
    assert len(blob) == MIN_SEALED_LENGTH + len(plaintext)


@shared_fixtures
@given(person=person_ids, text=st.text(max_size=200))
def test_text_is_sealed_as_utf8(envelope: Envelope, person: str, text: str) -> None:
    assert envelope.open_field(person, "name", envelope.seal_field(person, "name", text)) == text.encode()


@shared_fixtures
@given(plaintext=st.binary(max_size=64), data=st.data())
def test_any_single_byte_change_of_a_sealed_field_fails(envelope: Envelope, plaintext: bytes,
                                                        data: st.DataObject) -> None:
    blob = bytearray(envelope.seal_field("li-lei", "phone", plaintext))
    index = data.draw(st.integers(0, len(blob) - 1), label="index")
    blob[index] ^= data.draw(st.integers(1, 255), label="xor")
    # a changed data key id reads as DataKeyErasedError, itself a SealedDataError
    with pytest.raises(SealedDataError) as caught:
        envelope.open_field("li-lei", "phone", bytes(blob))
    assert "\n" not in str(caught.value)


def test_a_blob_sealed_for_one_person_does_not_open_for_another(envelope: Envelope) -> None:
    blob = envelope.seal_field("li-lei", "phone", b"13812345678")
    envelope.seal_field("han-meimei", "phone", b"anything")  # she has a data key of her own
    with pytest.raises(SealedDataError) as caught:
        envelope.open_field("han-meimei", "phone", blob)
    assert "13812345678" not in str(caught.value)


def test_a_blob_sealed_for_one_field_does_not_open_as_another(envelope: Envelope) -> None:
    blob = envelope.seal_field("li-lei", "phone", b"13812345678")
    with pytest.raises(SealedDataError, match="'email'"):
        envelope.open_field("li-lei", "email", blob)


@settings(max_examples=200)
@given(person=person_ids, field=field_names, other_person=person_ids, other_field=field_names)
def test_associated_data_binds_person_and_field_even_under_one_data_key(
    person: str, field: str, other_person: str, other_field: str
) -> None:
    # The data key id already differs between people; this checks the layer below it, the
    # associated data, including that ("ab", "c") and ("a", "bc") stay apart.
    key = DataKey(7, 0, AESGCM(AESGCM.generate_key(256)))
    blob = Envelope._seal(key, person, field, b"13812345678")
    assert Envelope._open(key, person, field, blob) == b"13812345678"
    if (other_person, other_field) != (person, field):
        with pytest.raises(SealedDataError):
            Envelope._open(key, other_person, other_field, blob)
    if len(person) > 1:
        with pytest.raises(SealedDataError):
            Envelope._open(key, person[:-1], person[-1] + field, blob)


def test_same_plaintext_seals_differently_each_time(envelope: Envelope) -> None:
    blobs = {envelope.seal_field("li-lei", "phone", b"13812345678") for _ in range(20)}
    assert len(blobs) == 20


def test_a_blob_starts_with_the_version_and_the_data_key_id(envelope: Envelope, store: Store) -> None:
    blob = envelope.seal_field("li-lei", "phone", b"x")
    wrapped = store.get(store.keys.vault_data_key("li-lei"))
    assert wrapped is not None
    assert blob[0] == 1 and blob[1:5] == wrapped[1:5]


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x02" + bytes(40), bytes(MIN_SEALED_LENGTH - 1)])
def test_malformed_or_unknown_version_blobs_are_refused(envelope: Envelope, blob: bytes) -> None:
    envelope.seal_field("li-lei", "phone", b"x")
    with pytest.raises(SealedDataError, match="malformed or of an unknown version"):
        envelope.open_field("li-lei", "phone", blob)


def test_another_process_with_the_same_ring_opens_the_field(
    envelope: Envelope, make_envelope: Callable[..., Envelope]
) -> None:
    blob = envelope.seal_field("li-lei", "phone", b"13812345678")
    assert make_envelope().open_field("li-lei", "phone", blob) == b"13812345678"


def test_a_data_key_wrapped_under_an_unknown_kek_fails_clearly(envelope: Envelope, store: Store) -> None:
    blob = envelope.seal_field("li-lei", "phone", b"x")
    key = store.keys.vault_data_key("li-lei")
    wrapped = bytearray(store.get(key) or b"")
    wrapped[5:9] = (int.from_bytes(wrapped[5:9], "big") ^ 0xFFFFFFFF).to_bytes(4, "big")
    store.redis.set(key, bytes(wrapped))
    fresh = Envelope(store, envelope.data_keys.ring)  # nothing cached
    with pytest.raises(UnknownKeyError, match="unknown key-encryption key id"):
        fresh.open_field("li-lei", "phone", blob)


def test_a_wrapped_data_key_moved_to_another_person_does_not_unwrap(envelope: Envelope,
                                                                    store: Store) -> None:
    envelope.seal_field("li-lei", "phone", b"x")
    blob = envelope.seal_field("li-lei", "phone", b"13812345678")
    wrapped = store.get(store.keys.vault_data_key("li-lei")) or b""
    store.redis.set(store.keys.vault_data_key("mallory"), wrapped)
    fresh = Envelope(store, envelope.data_keys.ring)
    with pytest.raises(SealedDataError, match="altered or moved"):
        fresh.open_field("mallory", "phone", blob)


def test_a_data_key_under_a_retired_kek_fails_clearly(ring: KeyRing, store: Store) -> None:
    sealing = Envelope(store, ring)
    blob = sealing.seal_field("li-lei", "phone", b"x")
    old = f"{ring.primary()[0]:08x}"
    ring.rotate()
    ring.retire(old, lambda _: 0, grace_seconds=0)  # a careless operator: the count is a lie
    with pytest.raises(RetiredKeyError, match=old):
        Envelope(store, ring).open_field("li-lei", "phone", blob)


# -- round trips -------------------------------------------------------------------


def test_sealing_takes_one_round_trip_then_none(envelope: Envelope,
                                                redis_commands: CommandCounter) -> None:
    envelope.seal_field("warm-up", "f", b"x")  # loads the Lua script into the server once
    redis_commands.reset()
    envelope.seal_field("li-lei", "phone", b"x")
    assert len(redis_commands) == 1
    envelope.seal_field("li-lei", "email", b"y")
    envelope.open_field("li-lei", "email", envelope.seal_field("li-lei", "email", b"z"))
    assert len(redis_commands) == 1


def test_a_whole_profile_is_sealed_and_opened_with_one_round_trip_each(
    envelope: Envelope, make_envelope: Callable[..., Envelope], redis_commands: CommandCounter
) -> None:
    profile = {f"field{i}": secrets.token_bytes(i * 8) for i in range(8)} | {"name": "李雷"}
    envelope.seal_field("warm-up", "f", b"x")
    redis_commands.reset()
    sealed = envelope.seal_profile("li-lei", profile)
    assert len(redis_commands) == 1
    redis_commands.reset()
    opened = make_envelope().open_profile("li-lei", sealed)
    assert len(redis_commands) == 1
    assert opened == {k: v.encode() if isinstance(v, str) else v for k, v in profile.items()}


def test_a_profile_takes_one_round_trip_even_with_the_cache_off(
    make_envelope: Callable[..., Envelope], redis_commands: CommandCounter
) -> None:
    envelope = make_envelope(cache_size=0)
    envelope.seal_field("warm-up", "f", b"x")
    redis_commands.reset()
    sealed = envelope.seal_profile("li-lei", {f"field{i}": b"x" for i in range(8)})
    envelope.open_profile("li-lei", sealed)
    assert len(redis_commands) == 2


def test_without_a_cache_every_seal_reads_the_data_key(make_envelope: Callable[..., Envelope],
                                                      redis_commands: CommandCounter) -> None:
    envelope = make_envelope(cache_size=0)
    envelope.seal_field("warm-up", "f", b"x")
    redis_commands.reset()
    for _ in range(3):
        envelope.seal_field("li-lei", "phone", b"x")
    assert len(redis_commands) == 3
