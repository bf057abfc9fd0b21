"""The Redis log: one round trip per append, one order, sealed trees, roots and proofs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gateway.audit import (
    AuditIntegrityError,
    AuditLog,
    canonical_json,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from gateway.audit.records import ZERO_HASH, StoredEntry
from gateway.store import Store
from tests.audit.factories import fill, make_event
from tests.audit.test_merkle import ref_mth, ref_path, ref_proof
from tests.live import queued_command_names


class RoundTrips:
    """Records what a Store's client sends: one list of commands per round trip."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.trips: list[list[str]] = []
        client = store.redis
        direct, make_pipeline = client.execute_command, client.pipeline

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.trips.append([str(args[0])])
            return direct(*args, **kwargs)  # type: ignore[no-untyped-call]

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = make_pipeline(*args, **kwargs)
            run = pipe.execute

            def execute(*a: Any, **k: Any) -> Any:
                self.trips.append(queued_command_names(pipe))
                return run(*a, **k)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        monkeypatch.setattr(client, "execute_command", counting)
        monkeypatch.setattr(client, "pipeline", pipeline)

    @property
    def commands(self) -> list[str]:
        return [c for trip in self.trips for c in trip]


def test_append_returns_consecutive_indexes_and_the_leaf_hash(audit_log: AuditLog) -> None:
    for n in range(5):
        event = make_event(n)
        appended = audit_log.append_event(event)
        assert appended.index == n
        assert appended.leaf_hash == leaf_hash(canonical_json(event))
    assert audit_log.size() == 5


def test_append_is_one_redis_round_trip(audit_log: AuditLog, store: Store,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    audit_log.append_event(make_event(0))  # the first call loads the script
    trips = RoundTrips(store, monkeypatch)
    audit_log.append_event(make_event(1))
    assert trips.trips == [["EVALSHA"]]


def test_each_entry_links_to_the_leaf_hash_of_the_one_before(audit_log: AuditLog) -> None:
    leaves = fill(audit_log, 4)
    entries = audit_log.read_entries(range(4))
    assert all(isinstance(e, StoredEntry) for e in entries)
    prevs = [e.prev for e in entries if isinstance(e, StoredEntry)]
    assert prevs == [ZERO_HASH, *leaves[:3]]


def test_roots_and_proofs_from_redis_equal_the_rfc_recursion(audit_log: AuditLog) -> None:
    fill(audit_log, 77)
    items = [e.event for e in audit_log.read_entries(range(77)) if isinstance(e, StoredEntry)]
    for size in (1, 2, 3, 8, 31, 64, 77):
        root = audit_log.root(size)
        assert root == ref_mth(items[:size])
        for index in {0, size // 2, size - 1}:
            proof = audit_log.inclusion_proof(index, size)
            assert proof == ref_path(index, items[:size])
            assert verify_inclusion(leaf_hash(items[index]), index, size, proof, root)
        for old in {1, size // 3 or 1, size}:
            proof = audit_log.consistency_proof(old, size)
            assert proof == ref_proof(old, items[:size]) if old < size else proof == []
            assert verify_consistency(old, size, audit_log.root(old), root, proof)


def test_proofs_read_logarithmically_many_hashes_in_one_round_trip(
    audit_log: AuditLog, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(audit_log, 1000)
    audit_log.seal()
    trips = RoundTrips(store, monkeypatch)
    audit_log.inclusion_proof(377, 1000)
    assert trips.commands.count("GETRANGE") <= 2 * (1000).bit_length()
    assert [t for t in trips.trips if "GETRANGE" in t] == [["GETRANGE"] * trips.commands.count("GETRANGE")]
    assert "HMGET" not in trips.commands  # no entry is read


def test_sealing_is_incremental_and_idempotent(audit_log: AuditLog) -> None:
    fill(audit_log, 10)
    assert audit_log.seal() == 10
    fill(audit_log, 5, start=10)
    assert audit_log.seal(12) == 12
    assert audit_log.seal(11) == 12  # never goes back
    assert audit_log.seal() == 15
    items = [e.event for e in audit_log.read_entries(range(15)) if isinstance(e, StoredEntry)]
    assert audit_log.root(15) == ref_mth(items)


def test_concurrent_sealers_agree(audit_log: AuditLog) -> None:
    fill(audit_log, 300)
    audit_log.sealer._batch = 7  # many small steps, so the threads interleave
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: audit_log.seal(), range(6)))
    items = [e.event for e in audit_log.read_entries(range(300)) if isinstance(e, StoredEntry)]
    assert audit_log.root(300) == ref_mth(items)


def test_a_proof_past_the_end_of_the_log_is_refused(audit_log: AuditLog) -> None:
    fill(audit_log, 3)
    with pytest.raises(ValueError):
        audit_log.inclusion_proof(0, 4)


def test_append_refuses_to_continue_a_log_whose_head_was_removed(audit_log: AuditLog, store: Store) -> None:
    fill(audit_log, 2)
    store.redis.delete(store.keys.audit_head())
    with pytest.raises(AuditIntegrityError, match="head is missing"):
        audit_log.append_event(make_event(9))
    assert audit_log.size() == 2


def test_sealing_stops_at_an_entry_that_is_not_genuine(audit_log: AuditLog, store: Store) -> None:
    fill(audit_log, 6)
    key = store.keys.audit_entries()
    raw = store.redis.hget(key, "4")
    assert isinstance(raw, bytes)
    store.redis.hset(key, "4", raw.replace(b"p-4", b"p-5"))
    with pytest.raises(AuditIntegrityError) as caught:
        audit_log.seal()
    assert caught.value.index == 4
    assert audit_log.sealer.sealed_size() == 0  # the whole batch is refused


def test_query_index_lists_follow_the_append_order(audit_log: AuditLog, store: Store) -> None:
    fill(audit_log, 20)
    listed = store.redis.lrange(store.keys.audit_index("person", "p-3"), 0, -1)
    assert [int(i) for i in listed] == [3, 10, 17]


def test_a_proof_within_the_sealed_size_is_one_round_trip(audit_log: AuditLog, store: Store,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fill(audit_log, 50)
    audit_log.root(50)  # seals, and the log remembers how far
    trips = RoundTrips(store, monkeypatch)
    audit_log.inclusion_proof(20, 40)
    assert len(trips.trips) == 1
