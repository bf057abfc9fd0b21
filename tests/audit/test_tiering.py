"""The cold tier: signed chunks move to files, Redis keeps a bounded tail, and roots, proofs,
verify, queries and people's histories give the same answers across both tiers."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from gateway.audit import AuditKeys, AuditLog, AuditService, Checkpointer
from gateway.audit.cold import FileColdStore, TierLayout
from gateway.audit.errors import AuditError
from gateway.audit.merkle import (
    MemorySubtrees,
    TreeBuilder,
    consistency_plan,
    inclusion_plan,
    materialize,
    root_at,
)
from gateway.audit.proofs import prove_latest, verify_proof
from gateway.audit.query import AuditFilter, AuditQuery
from gateway.audit.tiering import Tiering
from gateway.audit.verify import verify_log
from gateway.store import Store
from tests.audit.factories import ORIGIN, fill, person_event
from tests.audit.workers import grow_and_tier

# Small shapes, so a few hundred entries cross every boundary: hash tiles of 4 (levels 0-1,
# 2-3, 4-5, 6-7 each in their own tile level), Redis tile keys of 8, chunks of 16.
LAYOUT = TierLayout(tile_height=2, redis_tile_width=8, chunk_entries=16)
HOT = 20


@pytest.fixture
def cold(tmp_path: Path) -> FileColdStore:
    return FileColdStore(tmp_path / "cold")


@pytest.fixture
def log(store: Store, audit_keys: AuditKeys, cold: FileColdStore) -> AuditLog:
    return AuditLog(store, audit_keys, cold=cold, layout=LAYOUT)


@pytest.fixture
def checkpointer(log: AuditLog, audit_keys: AuditKeys) -> Checkpointer:
    return Checkpointer(log, audit_keys.signer, every_events=1_000_000, every_seconds=3600)


def grow(
    log: AuditLog, checkpointer: Checkpointer, count: int, start: int = 0, every: int = 10
) -> list[bytes]:
    """Append ``count`` person events with a checkpoint every ``every``; their leaf hashes."""
    leaves = []
    for first in range(start, start + count, every):
        batch = range(first, min(start + count, first + every))
        leaves += [log.append_event(person_event(n)).leaf_hash for n in batch]
        checkpointer.checkpoint()
    return leaves


def reference(leaves: list[bytes]) -> MemorySubtrees:
    """Every complete subtree of the log, computed in memory from its leaves."""
    builder, nodes = TreeBuilder(), MemorySubtrees()
    for leaf in leaves:
        nodes.put_subtrees(builder.push(leaf))
    return nodes


def audit_keys_in_redis(store: Store) -> dict[str, int]:
    """Every key of the log in Redis with the bytes Redis says it takes."""
    found = {}
    for key in store.redis.scan_iter(match=f"{store.keys.prefix}{{audit}}*", count=1000):
        found[key.decode()] = int(cast(int, store.redis.memory_usage(key)) or 0)
    return found


def test_moved_chunks_leave_redis_and_every_root_and_proof_stays_the_same(
    log: AuditLog, checkpointer: Checkpointer, store: Store
) -> None:
    leaves = grow(log, checkpointer, 300)
    moved = Tiering(log, checkpointer, hot_entries=HOT).move()
    boundary = log.cold_size()
    assert boundary == 272 and [m.stop for m in moved] == list(range(16, 273, 16))
    keys = store.keys.audit_shard(0)
    assert not any(store.redis.hexists(keys.audit_entries(), str(i)) for i in range(boundary))
    assert store.redis.hexists(keys.audit_entries(), str(boundary))
    assert not store.redis.exists(keys.audit_tile(0, 0), keys.audit_tile(0, 33), keys.audit_tile(4, 1))
    # No tile key left at any level spans only cold leaves: none stays behind as the tree grows.
    tile_prefix = keys.audit_tile(0, 0).rsplit(":", 2)[0]
    for name in store.redis.scan_iter(match=f"{tile_prefix}:*", count=1000):
        level, number = map(int, name.decode().rsplit(":", 2)[1:])
        assert (number + 1) * log.tiles.hot.span_at(level) > boundary, name
    indexed = store.redis.lrange(keys.audit_index("action", "userinfo_read"), 0, -1)
    assert all(int(i) >= boundary for i in indexed)
    checkpoints = store.redis.zrange(keys.audit_checkpoints(), 0, -1, withscores=True)
    assert all(score >= boundary for _, score in checkpoints)

    fresh = AuditLog(store, log.keys, cold=log.cold, layout=LAYOUT)  # knows nothing of the boundary
    memory = reference(leaves)
    for size in (1, 5, 16, 17, 64, 100, 255, 256, 272, 273, 300):
        assert fresh.root(size) == root_at(size, memory)
    for index in (0, 3, 15, 16, 63, 64, 200, 271, 272, 299):
        assert fresh.inclusion_proof(index, 300) == materialize(inclusion_plan(index, 300), memory)
    for old in (1, 7, 16, 100, 271, 290):
        assert fresh.consistency_proof(old, 300) == materialize(consistency_plan(old, 300), memory)
    assert [e.leaf_hash() for e in fresh.read_entries(list(range(300))) if not isinstance(e, str)] == leaves


def test_the_log_verifies_across_both_tiers_and_a_changed_cold_object_is_named(
    log: AuditLog, checkpointer: Checkpointer, cold: FileColdStore
) -> None:
    grow(log, checkpointer, 120)
    Tiering(log, checkpointer, hot_entries=HOT).move()
    report = verify_log(log)
    assert report.ok, report.problem
    assert report.entries_checked == 120 and report.checkpoints_checked == 12

    bundle = cold.root / log.objects.entry_bundle(9)  # entries 36..39
    data = bytearray(bundle.read_bytes())
    data[-3] ^= 1  # inside the event of entry 39
    bundle.write_bytes(bytes(data))
    fresh = AuditLog(log.store, log.keys, cold=cold, layout=LAYOUT)
    problem = verify_log(fresh).problem
    assert problem is not None and problem.index == 39


def test_a_changed_cold_hash_tile_fails_verification(
    log: AuditLog, checkpointer: Checkpointer, cold: FileColdStore
) -> None:
    grow(log, checkpointer, 120)
    Tiering(log, checkpointer, hot_entries=HOT).move()
    tile = cold.root / log.objects.hash_tile(1, 1)  # level-2 nodes 4..7 (leaves 16..31)
    data = bytearray(tile.read_bytes())
    data[0] ^= 1
    tile.write_bytes(bytes(data))
    fresh = AuditLog(log.store, log.keys, cold=cold, layout=LAYOUT)
    report = verify_log(fresh)
    assert report.problem is not None and "stored hash of subtree [16, 20)" in report.problem.reason


def test_queries_and_histories_give_the_same_answers_after_tiering(
    log: AuditLog, checkpointer: Checkpointer
) -> None:
    grow(log, checkpointer, 200)
    query = AuditQuery(log)
    filters = [AuditFilter(person="person-7"), AuditFilter(shop="shop-1", person="person-4"),
               AuditFilter(action="userinfo_read"), AuditFilter(field="phone", outcome="success"),
               AuditFilter(person="nobody"), AuditFilter()]

    def answers() -> list[list[int]]:
        return [[e.index for e in query.events(f)] for f in filters]

    def pages(flt: AuditFilter) -> list[list[int]]:
        found, cursor = [], 0
        while cursor is not None:
            page = query.page(flt, cursor, limit=3)
            found.append([e.index for e in page.items])
            cursor = page.next_cursor
        return found

    before, paged = answers(), pages(AuditFilter(person="person-7"))
    history = [e.index for e in query.latest_for_person("person-3", limit=50)]
    Tiering(log, checkpointer, hot_entries=HOT).move()
    assert log.cold_size() == 176
    assert answers() == before
    assert pages(AuditFilter(person="person-7")) == paged
    assert [e.index for e in query.latest_for_person("person-3", limit=50)] == history
    assert len(history) == 5 and history == sorted(history, reverse=True)
    found = query.event(3)
    assert found is not None and found.event.person == "person-3"


def test_a_proof_for_a_cold_event_verifies_against_the_latest_checkpoint(
    log: AuditLog, checkpointer: Checkpointer, audit_keys: AuditKeys
) -> None:
    grow(log, checkpointer, 100)
    Tiering(log, checkpointer, hot_entries=HOT).move()
    proof = prove_latest(checkpointer, 5)
    checkpoint, event = verify_proof(proof.to_text(), [audit_keys.signer.verifier], ORIGIN)
    assert checkpoint.size == 100 and event.request_id == "req-5"


def test_redis_memory_for_the_log_stays_bounded_as_the_log_grows(
    log: AuditLog, checkpointer: Checkpointer, store: Store
) -> None:
    tiering = Tiering(log, checkpointer, hot_entries=64)
    grow(log, checkpointer, 200)
    tiering.move()
    small = sum(audit_keys_in_redis(store).values())
    grow(log, checkpointer, 1000, start=200)
    tiering.move()
    large = audit_keys_in_redis(store)
    assert log.size() == 1200 and log.cold_size() == 1136
    # Six times the entries, about the same Redis memory: what grows is time (the hour table
    # gains one field an hour), not history.
    assert sum(large.values()) < 1.3 * small, sorted(large.items(), key=lambda kv: -kv[1])[:5]
    assert verify_log(log).ok


def test_the_tree_hashes_left_in_redis_do_not_grow_with_the_height_of_the_tree(
    store: Store, audit_keys: AuditKeys, cold: FileColdStore
) -> None:
    # Redis tile keys wider than a chunk, as in production (65,536 against tlog tiles of 256):
    # a key at a higher level must not keep a full key's worth of cold hashes at every level.
    wide = TierLayout(tile_height=2, redis_tile_width=64, chunk_entries=16)
    log = AuditLog(store, audit_keys, cold=cold, layout=wide)
    checkpointer = Checkpointer(log, audit_keys.signer, every_events=1_000_000, every_seconds=3600)
    tiering = Tiering(log, checkpointer, hot_entries=64)
    grow(log, checkpointer, 4000, every=500)
    tiering.move()
    tile_prefix = store.keys.audit_shard(0).audit_tile(0, 0).rsplit(":", 2)[0]
    tile_bytes = sum(cast(int, store.redis.strlen(name))
                     for name in store.redis.scan_iter(match=f"{tile_prefix}:*", count=1000))
    hot = log.size() - log.cold_size()
    # The hot leaves and their parents (less than twice the leaves), plus one key's slack.
    assert tile_bytes <= 32 * (2 * hot + 2 * 64), tile_bytes
    assert verify_log(log).ok


def test_a_mover_that_dies_before_clearing_redis_is_finished_by_the_next(
    log: AuditLog, checkpointer: Checkpointer, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    grow(log, checkpointer, 60)
    tiering = Tiering(log, checkpointer, hot_entries=HOT)
    clear = Tiering._clear

    def die_once(self: Tiering, *args: object) -> None:
        monkeypatch.setattr(Tiering, "_clear", clear)
        raise ConnectionError("killed between the boundary and the clearing")

    monkeypatch.setattr(Tiering, "_clear", die_once)
    with pytest.raises(ConnectionError):
        tiering.move()
    keys = store.keys.audit_shard(0)
    assert log.cold_size() == 16 and store.redis.hexists(keys.audit_entries(), "0")  # not cleared
    assert verify_log(log).ok  # readers already read the cold tier
    tiering.move()
    assert log.cold_size() == 32
    assert not any(store.redis.hexists(keys.audit_entries(), str(i)) for i in range(32))
    assert int(store.redis.get(keys.audit_cold_cleaned()) or 0) == 32
    assert verify_log(log).ok


def test_nothing_moves_that_no_checkpoint_signs(log: AuditLog, checkpointer: Checkpointer) -> None:
    fill(log, 100)  # sealed by nobody, signed by nobody
    assert Tiering(log, checkpointer, hot_entries=0).move() == []
    checkpointer.checkpoint()  # signs 100
    fill(log, 50, start=100)
    moved = Tiering(log, checkpointer, hot_entries=0).move()
    assert moved[-1].stop == 96  # the last whole chunk under the signed size


def test_movers_readers_and_writers_at_once_never_see_a_gap(
    log: AuditLog, checkpointer: Checkpointer, store: Store, audit_keys: AuditKeys
) -> None:
    grow(log, checkpointer, 100)
    errors: list[BaseException] = []
    stop = threading.Event()

    def guarded(work: object) -> threading.Thread:
        def run() -> None:
            try:
                while not stop.is_set():
                    work()  # type: ignore[operator]
            except BaseException as error:  # noqa: BLE001 - reported by the test
                errors.append(error)
                stop.set()
        return threading.Thread(target=run)

    written = iter(range(100, 10_000))
    other_checkpointer = Checkpointer(AuditLog(store, audit_keys, cold=log.cold, layout=LAYOUT),
                                      audit_keys.signer, every_events=10, every_seconds=3600)

    def write() -> None:
        for _ in range(10):
            log.append_event(person_event(next(written)))
        checkpointer.checkpoint()

    def read() -> None:
        reader = AuditLog(store, audit_keys, cold=log.cold, layout=LAYOUT)
        size = (checkpointer.latest() or pytest.fail("no checkpoint")).checkpoint.size
        found = [e.index for e in AuditQuery(reader).events(AuditFilter(person="person-5"))]
        expected = list(range(5, size, 40))  # one writer: event n is entry n
        assert found[: len(expected)] == expected and all(i % 40 == 5 for i in found)
        assert not any(isinstance(e, str) for e in reader.read_entries(list(range(size))))
        reader.inclusion_proof(size // 2, size)

    threads = [guarded(write), guarded(read),
               guarded(lambda: Tiering(log, checkpointer, hot_entries=HOT).move(1)),
               guarded(lambda: Tiering(other_checkpointer.log, other_checkpointer, hot_entries=HOT).move(1))]
    for thread in threads:
        thread.start()
    stop.wait(6)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors[0]
    assert log.cold_size() >= 64
    assert verify_log(log).ok


def test_a_sharded_service_moves_each_shard_and_the_combined_notes(
    store: Store, audit_keys_dir: Path, tmp_path: Path
) -> None:
    service = AuditService(store, audit_keys_dir, ORIGIN, every_events=1_000_000, every_seconds=3600,
                           shards=3, cold_dir=tmp_path / "cold", hot_entries=HOT, layout=LAYOUT)
    for first in range(0, 600, 30):
        for n in range(first, first + 30):
            service.record(person_event(n))
        assert service.combined is not None
        service.combined.checkpoint()
    moved = service.move_to_cold_tier(max_chunks=None)
    assert {m.shard for m in moved} == {0, 1, 2}
    combined_key = store.keys.audit_combined_checkpoints()
    assert store.redis.zcard(combined_key) == 1  # the others moved with shard 0
    assert service.verify().ok
    events = list(service.query.events(AuditFilter(person="person-11")))
    assert [e.event.request_id for e in events] == [f"req-{n}" for n in range(11, 600, 40)]


def test_cold_objects_never_change(cold: FileColdStore) -> None:
    cold.put("shard-0/tile/0/000", b"a" * 128)
    cold.put("shard-0/tile/0/000", b"a" * 128)  # the same bytes again: nothing happens
    with pytest.raises(AuditError):
        cold.put("shard-0/tile/0/000", b"b" * 128)
    with pytest.raises(ValueError):
        cold.put("../outside", b"x")
    assert cold.names("shard-0/") == ["shard-0/tile/0/000"]


def test_a_mover_killed_at_any_moment_leaves_a_log_that_verifies_and_reads_whole(
    log: AuditLog, checkpointer: Checkpointer, store: Store, audit_keys_dir: Path, cold: FileColdStore
) -> None:
    context = multiprocessing.get_context("spawn")
    for round_number in range(4):
        victim = context.Process(target=grow_and_tier, args=(
            store.url, store.keys.prefix, str(audit_keys_dir), str(cold.root), 100_000 * round_number))
        victim.start()
        deadline = time.monotonic() + 20
        while log.cold_size() < 48 * (round_number + 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(random.uniform(0, 0.05))  # somewhere inside a move, or between moves
        os.kill(cast(int, victim.pid), signal.SIGKILL)
        victim.join(timeout=10)
        store.redis.delete(store.keys.audit_shard(0).audit_checkpoint_lock())  # its lock dies with it
        size = log.size()
        assert not any(isinstance(e, str) for e in log.read_entries(list(range(size))))
    checkpointer.checkpoint()
    Tiering(log, checkpointer, hot_entries=HOT).move()
    keys = store.keys.audit_shard(0)
    assert int(store.redis.get(keys.audit_cold_cleaned()) or 0) == log.cold_size() >= 192
    assert store.redis.hlen(keys.audit_entries()) == log.size() - log.cold_size()
    report = verify_log(log)
    assert report.ok, report.problem


def test_a_log_begun_again_on_an_empty_redis_never_meets_the_old_cold_objects(
    log: AuditLog, checkpointer: Checkpointer, store: Store, audit_keys: AuditKeys, cold: FileColdStore
) -> None:
    grow(log, checkpointer, 60)
    Tiering(log, checkpointer, hot_entries=HOT).move()
    old_prefix = log.objects.prefix
    for key in store.redis.scan_iter(match=f"{store.keys.prefix}{{audit}}*"):
        store.redis.delete(key)  # Redis lost everything
    again = AuditLog(store, audit_keys, cold=cold, layout=LAYOUT)
    again_checkpointer = Checkpointer(again, audit_keys.signer, every_events=1_000_000, every_seconds=3600)
    grow(again, again_checkpointer, 60, start=500)
    assert Tiering(again, again_checkpointer, hot_entries=HOT).move()
    assert again.objects.prefix != old_prefix
    assert cold.names(old_prefix) and verify_log(again).ok
