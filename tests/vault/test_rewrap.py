"""Rotation, rewrap and retirement end to end; rewrap resumes after an interruption."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from gateway.store import Store
from gateway.vault import (
    Envelope,
    KeyRing,
    KeyStateError,
    MasterKey,
    RewrapProgress,
    rewrap_data_keys,
)


class Interrupted(Exception):
    pass


def _seal_people(envelope: Envelope, count: int, start: int = 0) -> dict[str, bytes]:
    return {f"person-{i}": envelope.seal_field(f"person-{i}", "phone", f"138{i:08d}".encode())
            for i in range(start, start + count)}


def _hex(ring: KeyRing) -> str:
    return f"{ring.primary()[0]:08x}"


def test_rotate_rewrap_retire_keeps_every_field_readable(
    ring: KeyRing, ring_dir: Path, master: MasterKey, store: Store
) -> None:
    envelope = Envelope(store, ring)
    before = _seal_people(envelope, 20)
    old = _hex(ring)
    ring.rotate()
    new = _hex(ring)
    after = _seal_people(envelope, 5, start=20)  # new people are wrapped under the new key
    assert envelope.data_keys.count_by_kek() == {old: 20, new: 5}
    with pytest.raises(KeyStateError, match="still wraps 20 data keys"):
        ring.retire(old, envelope.data_keys.count_wrapped_under, grace_seconds=0)

    seen: list[RewrapProgress] = []
    result = rewrap_data_keys(envelope.data_keys, on_progress=seen.append, batch_size=7)
    counters = (result.done, result.total, result.rewrapped, result.unchanged, result.failed)
    assert counters == (True, 25, 20, 5, 0)
    assert seen[-1] == result and all(p.target_kek == new for p in seen)
    assert envelope.data_keys.count_by_kek() == {new: 25}

    ring.retire(old, envelope.data_keys.count_wrapped_under, grace_seconds=0)
    restarted = Envelope(store, KeyRing.load(ring_dir, master))  # a new process, empty cache
    for person, blob in (before | after).items():
        assert restarted.open_field(person, "phone", blob) == f"138{int(person[7:]):08d}".encode()
    assert store.get(store.keys.vault_rewrap_progress()) is None


def test_rewrap_resumes_where_an_interrupted_walk_stopped(ring: KeyRing, store: Store) -> None:
    envelope = Envelope(store, ring)
    blobs = _seal_people(envelope, 60)
    ring.rotate()

    def stop_after_the_first_keys(progress: RewrapProgress) -> None:
        if progress.scanned and not progress.done:
            raise Interrupted

    with pytest.raises(Interrupted):
        rewrap_data_keys(envelope.data_keys, on_progress=stop_after_the_first_keys, batch_size=5)
    saved = cast(dict[bytes, bytes], store.redis.hgetall(store.keys.vault_rewrap_progress()))
    assert saved[b"target"].decode() == _hex(ring) and int(saved[b"cursor"]) != 0
    first_part = int(saved[b"rewrapped"])
    assert 0 < first_part < 60

    result = rewrap_data_keys(envelope.data_keys, batch_size=5)
    assert result.resumed and result.done
    assert result.rewrapped == 60  # the counters carry over from the first part
    assert envelope.data_keys.count_by_kek() == {_hex(ring): 60}
    fresh = Envelope(store, ring)
    for person, blob in blobs.items():
        fresh.open_field(person, "phone", blob)


def test_a_second_rewrap_changes_nothing(ring: KeyRing, store: Store) -> None:
    envelope = Envelope(store, ring)
    _seal_people(envelope, 10)
    ring.rotate()
    rewrap_data_keys(envelope.data_keys)
    wrapped = {k: store.get(k) for k in (store.keys.vault_data_key(f"person-{i}") for i in range(10))}
    again = rewrap_data_keys(envelope.data_keys)
    assert (again.rewrapped, again.unchanged, again.resumed) == (0, 10, False)
    assert {k: store.get(k) for k in wrapped} == wrapped


def test_a_walk_for_an_older_target_starts_over_after_another_rotation(ring: KeyRing, store: Store) -> None:
    envelope = Envelope(store, ring)
    _seal_people(envelope, 30)
    ring.rotate()

    def interrupt(progress: RewrapProgress) -> None:
        if progress.scanned:
            raise Interrupted

    with pytest.raises(Interrupted):
        rewrap_data_keys(envelope.data_keys, on_progress=interrupt, batch_size=5)
    ring.rotate()
    result = rewrap_data_keys(envelope.data_keys, batch_size=5)
    assert not result.resumed and result.total == 30
    assert envelope.data_keys.count_by_kek() == {_hex(ring): 30}


def test_rewrap_never_brings_back_a_data_key_erased_during_the_walk(ring: KeyRing, store: Store) -> None:
    envelope = Envelope(store, ring)
    _seal_people(envelope, 1)
    key = store.keys.vault_data_key("person-0")
    stale = store.get(key)
    assert stale is not None
    envelope.erase_person("person-0")
    assert envelope.data_keys.replace_if_unchanged([(key, stale, b"\x01" + bytes(68))]) == 0
    assert store.get(key) is None


def test_a_data_key_that_does_not_unwrap_is_counted_as_failed_and_left_alone(
    ring: KeyRing, store: Store
) -> None:
    envelope = Envelope(store, ring)
    _seal_people(envelope, 3)
    key = store.keys.vault_data_key("person-1")
    damaged = bytearray(store.get(key) or b"")
    damaged[-1] ^= 1
    store.redis.set(key, bytes(damaged))
    ring.rotate()
    result = rewrap_data_keys(envelope.data_keys)
    assert (result.rewrapped, result.failed) == (2, 1)
    assert store.get(key) == bytes(damaged)
