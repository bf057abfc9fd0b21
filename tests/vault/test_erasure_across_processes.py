"""Erasure reaches every process at once: no cached data key outlives it (issue 12).

On main at 079fbc4 another worker kept opening (and sealing) an erased person's data from its
data-key cache for up to 300 s.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.store import Store
from gateway.store.connection import redis_client
from gateway.vault import Envelope, KeyRing, MasterKey
from gateway.vault.errors import DataKeyErasedError
from gateway.vault.profiles import SealedProfiles

PROFILE = {"email": "lilei@example.com", "nickname": "李雷"}


def two_processes(store: Store, make_envelope: Callable[..., Envelope]
                  ) -> tuple[SealedProfiles, SealedProfiles]:
    """Two SealedProfiles with caches of their own on one Redis: two gateway processes."""
    return SealedProfiles(store, make_envelope()), SealedProfiles(store, make_envelope())


def test_another_process_reads_nothing_after_erasure(store: Store,
                                                     make_envelope: Callable[..., Envelope]) -> None:
    a, b = two_processes(store, make_envelope)
    a.save("p1", PROFILE)
    assert b.load("p1") == PROFILE  # B now caches the data key
    a.erase("p1")
    assert b.load("p1") == {}


def test_another_process_cannot_resurrect_data_under_an_erased_key(
    store: Store, make_envelope: Callable[..., Envelope]
) -> None:
    a, b = two_processes(store, make_envelope)
    b.save("p1", PROFILE)  # B caches the key
    a.erase("p1")
    b.save("p1", {"email": "again@example.com"})  # a sign-in racing the erasure, in B
    # Whatever B stored is sealed under a live key, never under the erased one: A opens it.
    assert a.load("p1") == {"email": "again@example.com"}
    wrapped = store.get(store.keys.vault_data_key("p1"))
    assert wrapped is not None


def test_saving_for_a_person_marked_erased_is_refused(store: Store,
                                                      make_envelope: Callable[..., Envelope]) -> None:
    a, b = two_processes(store, make_envelope)
    b.save("p1", PROFILE)
    store.redis.set(store.keys.person_erased("p1"), "1")
    a.erase("p1")
    with pytest.raises(DataKeyErasedError):
        b.save("p1", PROFILE)
    assert store.redis.exists(store.keys.person_profile("p1")) == 0


def _reader(url: str, prefix: str, ring_dir: str, master: bytes, erased_at: Any, opened_after: Any,
            ready: Any, stop: Any) -> None:
    store = Store(redis_client(url), prefix)
    ring = KeyRing.load(Path(ring_dir), MasterKey(master))
    profiles = SealedProfiles(store, Envelope(store, ring))
    # A copy of the sealed profile (a backup, a replica, a value read just before erasure):
    # while this process caches the data key, old code kept opening it for 300 s.
    copy = store.redis.hgetall(store.keys.person_profile("p1"))
    while not stop.is_set():
        try:
            opened = profiles.open("p1", copy)
        except DataKeyErasedError:
            opened = {}
        ready.set()
        if opened and erased_at.value and time.time() > erased_at.value:
            opened_after.value += 1


def test_a_reading_process_opens_nothing_once_erase_returned(
    store: Store, tmp_path: Path, redis_url: str
) -> None:
    secret = os.urandom(32)
    ring_dir = tmp_path / "ring"
    ring = KeyRing.init(ring_dir, MasterKey(secret))
    SealedProfiles(store, Envelope(store, ring)).save("p1", PROFILE)
    context = multiprocessing.get_context("spawn")
    erased_at, opened_after = context.Value("d", 0.0), context.Value("i", 0)
    ready, stop = context.Event(), context.Event()
    reader = context.Process(target=_reader, args=(redis_url, store.keys.prefix, str(ring_dir),
                                                   secret, erased_at, opened_after, ready, stop))
    reader.start()
    try:
        assert ready.wait(30)
        time.sleep(0.2)
        SealedProfiles(store, Envelope(store, ring)).erase("p1")
        erased_at.value = time.time()
        time.sleep(0.5)
    finally:
        stop.set()
        reader.join(timeout=20)
    assert reader.exitcode == 0
    assert opened_after.value == 0, f"{opened_after.value} opens after erase() returned"
