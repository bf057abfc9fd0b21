"""Erasure reaches every process at once: no cached data key outlives it (issue 12).

On main at 079fbc4 another worker kept opening (and sealing) an erased person's data from its
data-key cache for up to 300 s. Two ``SealedProfiles`` with caches of their own on one Redis
model two gateway processes; the last tests run a real second process.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import Store
from gateway.vault import DataKeyCache, DataKeyStore, Envelope, KeyRing, MasterKey, rewrap_data_keys
from gateway.vault.errors import DataKeyErasedError, ProfileWriteConflictError
from gateway.vault.profiles import SealedProfiles
from tests.live import queued_command_names, redis_for

PROFILE = {"email": "lilei@example.com", "nickname": "李雷"}


class Process:
    """One gateway process: its own data-key cache, the shared Redis."""

    def __init__(self, store: Store, make_envelope: Callable[..., Envelope]) -> None:
        self.cache = DataKeyCache()
        self.profiles = SealedProfiles(store, make_envelope(cache=self.cache))


@pytest.fixture
def two(store: Store, make_envelope: Callable[..., Envelope]) -> tuple[Process, Process]:
    return Process(store, make_envelope), Process(store, make_envelope)


def stored_key_id(store: Store, person: str) -> int | None:
    wrapped = store.get(store.keys.vault_data_key(person))
    return None if wrapped is None else int.from_bytes(wrapped[1:5], "big")


def blob_key_ids(store: Store, person: str) -> set[int]:
    raw: dict[bytes, bytes] = store.redis.hgetall(store.keys.person_profile(person))  # type: ignore[assignment]
    return {int.from_bytes(blob[1:5], "big") for blob in raw.values()}


class RoundTrips:
    """Counts round trips: commands sent one by one, and pipelines executed."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def round_trips(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    counter = RoundTrips()
    command: Callable[..., Any] = store.redis.execute_command

    def one_command(*args: Any, **options: Any) -> Any:
        counter.count += 1
        return command(*args, **options)

    def one_pipeline(self: Any, *args: Any, **options: Any) -> Any:
        counter.count += 1
        return execute(self, *args, **options)

    monkeypatch.setattr(store.redis, "execute_command", one_command)
    pipeline_class = redis.cluster.ClusterPipeline if store.cluster else redis.client.Pipeline
    execute = pipeline_class.execute
    monkeypatch.setattr(pipeline_class, "execute", one_pipeline)
    yield counter


# -- reads -----------------------------------------------------------------------------


def test_another_process_reads_nothing_after_erasure(two: tuple[Process, Process]) -> None:
    a, b = two
    a.profiles.save("p1", PROFILE)
    assert b.profiles.load("p1") == PROFILE
    assert len(b.cache) == 1  # B now caches the data key
    a.profiles.erase("p1")
    assert b.profiles.load("p1") == {}
    assert len(b.cache) == 0  # and dropped it at its first read after the erasure


def test_a_copy_left_behind_opens_in_no_process(store: Store, ring: KeyRing,
                                                two: tuple[Process, Process]) -> None:
    a, b = two
    a.profiles.save("p1", PROFILE)
    copy: dict[bytes, bytes] = store.redis.hgetall(store.keys.person_profile("p1"))  # type: ignore[assignment]
    assert b.profiles.load("p1") == PROFILE  # B caches the key
    a.profiles.envelope.erase_person("p1")  # the data key only: the sealed hash stays behind
    assert store.redis.exists(store.keys.person_profile("p1")) == 1

    # The caller's pipeline (userinfo reads the consent in the same MULTI).
    pipe = store.redis.pipeline(transaction=True)
    pipe.get(store.keys.person_consent("p1", "shop-a"))
    b.profiles.queue_read(pipe, "p1")
    replies = pipe.execute()
    assert b.profiles.open_replies("p1", replies[1:1 + SealedProfiles.READ_COMMANDS]) == {}
    assert len(b.cache) == 0
    assert b.profiles.load("p1") == {}
    with pytest.raises(DataKeyErasedError):
        b.profiles.open("p1", copy)
    with pytest.raises(DataKeyErasedError):
        SealedProfiles(store, Envelope(store, ring)).open("p1", copy)  # a process never cached it


def test_a_key_re_created_after_erasure_does_not_open_the_old_data(
    store: Store, two: tuple[Process, Process]
) -> None:
    a, b = two
    a.profiles.save("p1", PROFILE)
    assert b.profiles.load("p1") == PROFILE  # B caches the first key
    a.profiles.envelope.erase_person("p1")  # the old sealed hash stays behind…
    a.profiles.envelope.seal_field("p1", "other", b"x")  # …and a new key is created
    with pytest.raises(DataKeyErasedError):
        b.profiles.load("p1")  # the old fields name the erased key: B's cached copy is not used


def test_queue_read_adds_read_commands_to_the_callers_pipeline_and_no_round_trip(
    store: Store, two: tuple[Process, Process], round_trips: RoundTrips
) -> None:
    a, b = two
    a.profiles.save("p1", PROFILE)
    b.profiles.load("p1")  # warm B's cache
    pipe = store.redis.pipeline(transaction=True)
    pipe.get(store.keys.person_grant("p1", "shop-a"))
    before = len(queued_command_names(pipe))
    b.profiles.queue_read(pipe, "p1")
    assert len(queued_command_names(pipe)) - before == SealedProfiles.READ_COMMANDS == 2
    round_trips.count = 0
    replies = pipe.execute()
    assert b.profiles.open_replies("p1", replies[1:]) == PROFILE
    assert round_trips.count == 1
    round_trips.count = 0
    assert b.profiles.load("p1") == PROFILE
    assert round_trips.count == 1
    with pytest.raises(ValueError, match="2 replies"):
        b.profiles.open_replies("p1", replies)


# -- writes ----------------------------------------------------------------------------


def test_another_process_cannot_resurrect_data_under_an_erased_key(
    store: Store, two: tuple[Process, Process]
) -> None:
    a, b = two
    b.profiles.save("p1", PROFILE)  # B caches the key
    erased = stored_key_id(store, "p1")
    a.profiles.erase("p1")
    b.profiles.save("p1", {"email": "again@example.com"})  # a sign-in racing the erasure, in B
    # Whatever B stored is sealed under a live key, never under the erased one: A opens it.
    live = stored_key_id(store, "p1")
    assert live is not None and live != erased
    assert blob_key_ids(store, "p1") == {live}
    assert a.profiles.load("p1") == {"email": "again@example.com"}


def test_an_erasure_between_sealing_and_writing_is_not_overwritten(
    store: Store, two: tuple[Process, Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    b.profiles.save("p1", PROFILE)
    erased = stored_key_id(store, "p1")
    seal = b.profiles.envelope.seal_profile_keyed
    sealed_under: list[int] = []

    def seal_then_erase_elsewhere(person: str, fields: Any) -> Any:
        key, sealed = seal(person, fields)
        sealed_under.append(key.data_key_id)
        if len(sealed_under) == 1:
            a.profiles.erase(person)  # A erases after B sealed, before B's write
        return key, sealed

    monkeypatch.setattr(b.profiles.envelope, "seal_profile_keyed", seal_then_erase_elsewhere)
    b.profiles.save("p1", {"email": "again@example.com"})
    assert sealed_under[0] == erased and sealed_under[1] != erased  # refused, sealed anew
    assert blob_key_ids(store, "p1") == {stored_key_id(store, "p1")}
    assert a.profiles.load("p1") == {"email": "again@example.com"}


def test_saving_for_a_person_marked_erased_is_refused(store: Store, two: tuple[Process, Process]) -> None:
    a, b = two
    b.profiles.save("p1", PROFILE)
    store.redis.set(store.keys.person_erased("p1"), "1")  # what AccountService.erase does
    a.profiles.erase("p1")
    with pytest.raises(DataKeyErasedError):
        b.profiles.save("p1", PROFILE)
    assert store.redis.exists(store.keys.person_profile("p1")) == 0
    assert len(b.cache) == 0


def test_a_key_that_keeps_changing_is_refused_clearly(
    store: Store, two: tuple[Process, Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two
    seal = b.profiles.envelope.seal_profile_keyed

    def seal_then_erase_elsewhere(person: str, fields: Any) -> Any:
        sealed = seal(person, fields)
        a.profiles.erase(person)
        return sealed

    monkeypatch.setattr(b.profiles.envelope, "seal_profile_keyed", seal_then_erase_elsewhere)
    with pytest.raises(ProfileWriteConflictError):
        b.profiles.save("p1", PROFILE)
    assert store.redis.exists(store.keys.person_profile("p1")) == 0


def test_saving_takes_one_round_trip_with_the_key_cached(two: tuple[Process, Process],
                                                         round_trips: RoundTrips) -> None:
    a, _ = two
    a.profiles.save("p1", PROFILE)  # creates the key, loads the script
    round_trips.count = 0
    a.profiles.save("p1", {"email": "new@example.com"})
    assert round_trips.count == 1


def test_a_rewrap_by_another_process_changes_nothing_readable(
    store: Store, ring: KeyRing, two: tuple[Process, Process]
) -> None:
    a, b = two
    b.profiles.save("p1", PROFILE)
    ring.rotate()
    assert rewrap_data_keys(DataKeyStore(store, ring)).rewrapped == 1
    assert b.profiles.load("p1") == PROFILE  # same data key, new wrapping: unwrapped anew
    b.profiles.save("p1", {"email": "new@example.com"})
    assert a.profiles.load("p1") == {"email": "new@example.com"}


# -- property --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
# Field names as the catalogue has them: any text but "*", the name of the one entry a profile
# is sealed into (SealedProfiles.save refuses it).
profiles = st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda name: name != "*"), json_values,
                           max_size=8)
people = itertools.count()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None)
@given(profile=profiles, update=profiles)
def test_any_profile_round_trips_across_processes_until_erased(
    store: Store, two: tuple[Process, Process], profile: dict[str, Any], update: dict[str, Any]
) -> None:
    a, b = two
    person = f"person-{next(people)}"
    a.profiles.save(person, profile)
    pipe = store.redis.pipeline(transaction=True)
    b.profiles.queue_read(pipe, person)
    expected = {k: v for k, v in profile.items() if v is not None}
    assert b.profiles.open_replies(person, pipe.execute()) == expected
    b.profiles.save(person, update)  # B's cached key, still the person's
    assert a.profiles.load(person) == {k: v for k, v in update.items() if v is not None}
    a.profiles.erase(person)
    assert b.profiles.load(person) == {}


# -- a real second process -------------------------------------------------------------


def _reader(url: str, prefix: str, ring_dir: str, master: bytes, erased: Any, counts: Any,
            ready: Any, stop: Any) -> None:
    """Reads p1 in a loop, as a live read and from a copy; ``counts``: opens before the
    erasure, attempts started after ``erase()`` returned, opens among those."""
    store = Store(redis_for(url), prefix)
    profiles = SealedProfiles(store, Envelope(store, KeyRing.load(Path(ring_dir), MasterKey(master))))
    # A copy of the sealed profile (a backup, a replica, a value read just before erasure):
    # while this process caches the data key, old code kept opening it for 300 s.
    copy = store.redis.hgetall(store.keys.person_profile("p1"))
    while not stop.is_set():
        after = bool(erased.value)  # read before the attempt starts
        opened = 0
        for read in (lambda: profiles.load("p1"), lambda: profiles.open("p1", copy)):
            try:
                opened += bool(read())
            except DataKeyErasedError:
                pass
        if after:
            counts[1] += 1
            counts[2] += opened
        else:
            counts[0] += opened
        if counts[0]:
            ready.set()


def test_a_reading_process_opens_nothing_once_erase_returned(
    store: Store, tmp_path: Path, redis_url: str
) -> None:
    secret = os.urandom(32)
    ring_dir = tmp_path / "ring"
    ring = KeyRing.init(ring_dir, MasterKey(secret))
    SealedProfiles(store, Envelope(store, ring)).save("p1", PROFILE)
    context = multiprocessing.get_context("spawn")
    erased, counts = context.Value("b", 0), context.Array("q", 3)
    ready, stop = context.Event(), context.Event()
    reader = context.Process(target=_reader, args=(redis_url, store.keys.prefix, str(ring_dir),
                                                   secret, erased, counts, ready, stop))
    reader.start()
    try:
        assert ready.wait(60), "the reader never opened the profile"
        time.sleep(0.2)
        SealedProfiles(store, Envelope(store, ring)).erase("p1")
        erased.value = 1
        time.sleep(0.5)
    finally:
        stop.set()
        reader.join(timeout=20)
    assert reader.exitcode == 0
    opened_before, attempts_after, opened_after = counts[:]
    assert opened_before > 0 and attempts_after > 0, (opened_before, attempts_after)
    assert opened_after == 0, f"{opened_after} opens in {attempts_after} reads after erase() returned"


def _writer(url: str, prefix: str, ring_dir: str, master: bytes, erased: Any, counts: Any,
            ready: Any, stop: Any) -> None:
    """Saves p1 in a loop (sign-ins); ``counts``: saves before the erasure, attempts started
    after ``erase()`` returned, saves among those that were stored."""
    store = Store(redis_for(url), prefix)
    profiles = SealedProfiles(store, Envelope(store, KeyRing.load(Path(ring_dir), MasterKey(master))))
    while not stop.is_set():
        after = bool(erased.value)
        try:
            profiles.save("p1", PROFILE)
            stored = 1
        except DataKeyErasedError:
            stored = 0
        if after:
            counts[1] += 1
            counts[2] += stored
        else:
            counts[0] += stored
        if counts[0]:
            ready.set()


def test_a_writing_process_stores_nothing_once_erase_returned(
    store: Store, tmp_path: Path, redis_url: str
) -> None:
    secret = os.urandom(32)
    ring_dir = tmp_path / "ring"
    ring = KeyRing.init(ring_dir, MasterKey(secret))
    context = multiprocessing.get_context("spawn")
    erased, counts = context.Value("b", 0), context.Array("q", 3)
    ready, stop = context.Event(), context.Event()
    writer = context.Process(target=_writer, args=(redis_url, store.keys.prefix, str(ring_dir),
                                                   secret, erased, counts, ready, stop))
    writer.start()
    try:
        assert ready.wait(60), "the writer never saved the profile"
        time.sleep(0.2)
        erased_key = stored_key_id(store, "p1")
        store.redis.set(store.keys.person_erased("p1"), "1")  # as AccountService.erase does
        SealedProfiles(store, Envelope(store, ring)).erase("p1")
        erased.value = 1
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join(timeout=20)
    assert writer.exitcode == 0
    saved_before, attempts_after, saved_after = counts[:]
    assert saved_before > 0 and attempts_after > 0, (saved_before, attempts_after)
    assert saved_after == 0, f"{saved_after} profiles stored in {attempts_after} saves after erase()"
    assert erased_key is not None
    assert store.redis.exists(store.keys.person_profile("p1")) == 0
