"""verify across shards: every shard's chain and tree, and the combined checkpoints over them.

Tampering is done with plain Redis commands on one shard's keys, as in test_tamper.py.
"""

from __future__ import annotations

from gateway.audit import AuditService
from gateway.audit.combined import SignedCombined, combine
from gateway.audit.note import sign_note
from gateway.audit.records import HEADER_SIZE
from tests.audit.conftest import SHARDS
from tests.audit.factories import ORIGIN, person_event


def filled(service: AuditService, events: int = 60, rounds: int = 2) -> AuditService:
    """``events`` events of many persons, with a round of checkpoints after each part."""
    assert service.combined is not None
    for part in range(rounds):
        for n in range(part * events // rounds, (part + 1) * events // rounds):
            service.record(person_event(n))
        assert service.combined.checkpoint() is not None
    return service


def test_an_untouched_sharded_log_verifies_with_sums_over_the_shards(sharded: AuditService) -> None:
    filled(sharded)
    sharded.record(person_event(99))  # one unsigned entry
    report = sharded.verify()
    assert report.ok, report.problem
    assert report.size == 61 and report.entries_checked == 61 and report.unsigned_tail == 1
    assert len(report.shards) == SHARDS and all(shard.ok for shard in report.shards)
    assert report.checkpoints_checked == sum(s.checkpoints_checked for s in report.shards) + 2


def test_an_entry_changed_in_one_shard_is_named_by_shard_and_index(sharded: AuditService) -> None:
    filled(sharded)
    shard = 2
    keys, redis = sharded.shards[shard].log.shard_keys, sharded.shards[shard].log.store.redis
    raw = redis.hget(keys.audit_entries(), "3")
    assert isinstance(raw, bytes)
    redis.hset(keys.audit_entries(), "3", raw[:HEADER_SIZE] + raw[HEADER_SIZE:].replace(b"phone", b"email"))
    report = sharded.verify()
    assert report.problem is not None
    assert (report.problem.shard, report.problem.index) == (shard, 3)
    assert [s.ok for s in report.shards] == [True, True, False]


def test_entries_cut_from_a_shard_under_a_combined_checkpoint_are_caught(sharded: AuditService) -> None:
    filled(sharded)
    log = sharded.shards[1].log
    size = log.size()
    log.store.redis.hdel(log.shard_keys.audit_entries(), str(size - 1))
    log.store.redis.set(log.shard_keys.audit_size(), size - 1)
    report = sharded.verify()
    assert report.problem is not None and report.problem.shard == 1
    assert report.problem.index == size - 1


def test_a_combined_checkpoint_over_other_roots_is_caught_even_if_signed(sharded: AuditService) -> None:
    filled(sharded)
    assert sharded.combined is not None
    latest = sharded.combined.latest()
    assert latest is not None
    shards = list(latest.combined.shards)
    shards[1] = type(shards[1])(shards[1].origin, shards[1].size, bytes(32))
    forged = combine(ORIGIN, shards)
    member = SignedCombined(forged, sign_note(forged.text(), [sharded.keys.signer]), 1).to_json()
    store = sharded.log.store
    store.redis.zadd(store.keys.audit_combined_checkpoints(), {member: latest.combined.total_size + 1})
    report = sharded.verify()
    assert report.problem is not None and report.problem.shard == 1
    assert "another root" in report.problem.reason


def test_a_mangled_combined_checkpoint_is_caught(sharded: AuditService) -> None:
    filled(sharded)
    store = sharded.log.store
    store.redis.zadd(store.keys.audit_combined_checkpoints(), {"not a note": 10_000})
    report = sharded.verify()
    assert report.problem is not None and report.problem.index is None
    assert "combined checkpoint #2" in report.problem.reason


def test_a_shard_emptied_entirely_is_caught_by_the_combined_checkpoints(sharded: AuditService) -> None:
    filled(sharded)
    log = sharded.shards[2].log
    tag = log.shard_keys.tag
    for key in list(log.store.redis.scan_iter(match=f"{log.store.keys.prefix}{{{tag[1:-1]}}}*")):
        log.store.redis.delete(key)
    assert log.size() == 0 and sharded.shards[2].checkpointer.latest() is None
    report = sharded.verify()
    assert report.problem is not None and report.problem.shard == 2
    assert "the shard holds 0" in report.problem.reason
