"""Whoever edits Redis directly is caught, and ``verify`` names the first bad index.

Every test here changes the stored log with plain Redis commands, bypassing the API, the way
an attacker or a careless operator with access to Redis would.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from gateway.audit import AuditLog, Checkpointer, canonical_json, leaf_hash, verify_log
from gateway.audit.merkle import HASH_SIZE
from gateway.store import Store
from tests.audit.factories import fill, make_event

SIGNED = 40  # entries covered by a checkpoint (and sealed)
TAIL = 6  # entries appended after it


@pytest.fixture
def log(audit_log: AuditLog, make_checkpointer: Callable[..., Checkpointer]) -> AuditLog:
    fill(audit_log, SIGNED)
    assert make_checkpointer().checkpoint() is not None
    fill(audit_log, TAIL, start=SIGNED)
    assert verify_log(audit_log).ok
    return audit_log


def raw(store: Store, index: int) -> bytes:
    value = store.redis.hget(store.keys.audit_entries(), str(index))
    assert isinstance(value, bytes)
    return value


def put(store: Store, index: int, value: bytes) -> None:
    store.redis.hset(store.keys.audit_entries(), str(index), value)


def first_bad(log: AuditLog) -> int | None:
    report = verify_log(log)
    assert not report.ok
    assert report.problem is not None
    return report.problem.index


def test_an_untouched_log_verifies(log: AuditLog) -> None:
    report = verify_log(log)
    assert report.ok and report.size == SIGNED + TAIL
    assert report.latest_checkpoint == SIGNED and report.unsigned_tail == TAIL


@pytest.mark.parametrize("index", [0, 17, SIGNED - 1, SIGNED + 2, SIGNED + TAIL - 1])
def test_changing_a_field_of_an_entry_is_caught_at_that_entry(log: AuditLog, store: Store,
                                                              index: int) -> None:
    put(store, index, raw(store, index).replace(b'"outcome":"success"', b'"outcome":"denied"'))
    assert first_bad(log) == index


def test_rewriting_an_event_in_canonical_form_is_still_caught(log: AuditLog, store: Store) -> None:
    record = raw(store, 12)
    forged = canonical_json(make_event(12, person="p-somebody-else"))
    put(store, 12, record[:64] + forged)  # same envelope, a well-formed but different event
    assert first_bad(log) == 12


@pytest.mark.parametrize("index", [5, SIGNED + 3])
def test_deleting_an_entry_is_caught_at_that_index(log: AuditLog, store: Store, index: int) -> None:
    store.redis.hdel(store.keys.audit_entries(), str(index))
    assert first_bad(log) == index


@pytest.mark.parametrize("i, j", [(10, 30), (3, 4), (SIGNED + 1, SIGNED + 3), (20, SIGNED + 2)])
def test_swapping_two_entries_is_caught_at_the_first(log: AuditLog, store: Store, i: int, j: int) -> None:
    a, b = raw(store, i), raw(store, j)
    put(store, i, b)
    put(store, j, a)
    assert first_bad(log) == i


def test_a_forged_entry_appended_past_the_api_is_caught(log: AuditLog, store: Store) -> None:
    size = log.size()
    event = canonical_json(make_event(999, action="profile_exported"))
    head = store.redis.get(store.keys.audit_head())
    assert isinstance(head, bytes)
    # A careful forger: right link, right layout, a made-up MAC; size and head updated.
    put(store, size, head + secrets.token_bytes(32) + event)
    store.redis.set(store.keys.audit_size(), size + 1)
    store.redis.set(store.keys.audit_head(), leaf_hash(event))
    assert first_bad(log) == size


def test_a_copy_of_a_genuine_entry_appended_past_the_api_is_caught(log: AuditLog, store: Store) -> None:
    size = log.size()
    copy = raw(store, 7)
    head = store.redis.get(store.keys.audit_head())
    assert isinstance(head, bytes)
    put(store, size, head + copy[HASH_SIZE:])  # genuine MAC, relinked to the end
    store.redis.set(store.keys.audit_size(), size + 1)
    store.redis.set(store.keys.audit_head(), leaf_hash(copy[64:]))
    assert first_bad(log) == size


def test_an_entry_written_beyond_the_size_is_caught(log: AuditLog, store: Store) -> None:
    put(store, log.size(), raw(store, 3))
    assert first_bad(log) == log.size()


def truncate(log: AuditLog, store: Store, keep: int) -> None:
    """Cut the log to ``keep`` entries as a careful attacker would: entries, size and head."""
    for index in range(keep, log.size()):
        store.redis.hdel(store.keys.audit_entries(), str(index))
    store.redis.set(store.keys.audit_size(), keep)
    store.redis.set(store.keys.audit_head(), leaf_hash(raw(store, keep - 1)[64:]))


def test_truncating_signed_entries_is_caught_where_it_was_cut(log: AuditLog, store: Store) -> None:
    keep = SIGNED - 5
    truncate(log, store, keep)
    store.redis.set(store.keys.audit_sealed(), keep)  # hide the seal too: the checkpoint remains
    assert first_bad(log) == keep


def test_truncating_the_tail_that_nothing_signed_or_sealed_goes_unnoticed(log: AuditLog,
                                                                          store: Store) -> None:
    """The known limit (docs/audit.md): someone who can write to Redis can cut off entries that
    no checkpoint covers yet (the seal mark catches only the careless). Checkpoint often, and
    hand checkpoints to witnesses outside Redis."""
    truncate(log, store, SIGNED + 2)
    assert verify_log(log).ok


def test_truncating_inside_the_unsealed_tail_is_caught_by_the_seal_mark(log: AuditLog, store: Store) -> None:
    log.seal()  # the whole tail is now sealed, though no checkpoint covers it
    truncate(log, store, SIGNED + 1)
    assert first_bad(log) == SIGNED + 1


def test_changing_a_stored_tree_hash_is_caught_at_its_subtree(log: AuditLog, store: Store) -> None:
    level, index = 3, 2  # leaves [16, 24)
    width = log.tiles.hot.width_at(level)
    key = store.keys.audit_tile(level, index // width)
    store.redis.setrange(key, (index % width) * HASH_SIZE, secrets.token_bytes(HASH_SIZE))
    assert first_bad(log) == 16


def test_changing_the_head_is_caught(log: AuditLog, store: Store) -> None:
    store.redis.set(store.keys.audit_head(), secrets.token_bytes(32))
    assert first_bad(log) == log.size() - 1


def test_a_checkpoint_signed_by_another_key_is_reported(log: AuditLog, store: Store) -> None:
    member = store.redis.zrange(store.keys.audit_checkpoints(), 0, 0)[0]
    assert isinstance(member, bytes)
    store.redis.zadd(store.keys.audit_checkpoints(), {member.replace(b"Y", b"Z", 1): SIGNED})
    report = verify_log(log)
    assert report.problem is not None and report.problem.index is None
    assert "checkpoint" in report.problem.reason


def test_a_mangled_stored_checkpoint_is_reported_not_raised(log: AuditLog, store: Store) -> None:
    store.redis.zadd(store.keys.audit_checkpoints(), {b"not json at all": SIGNED})
    report = verify_log(log)
    assert report.problem is not None and report.problem.index is None
