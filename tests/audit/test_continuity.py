"""Continuity: a Redis that lost data is noticed, named, and only accepted on the record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit import AuditKeys, AuditLog, AuditService, Checkpointer
from gateway.audit.checkpoint import Checkpoint, verify_checkpoint
from gateway.audit.continuity import Continuity, ContinuityError, ContinuityFile, ShardedContinuity
from gateway.store import Store
from tests.audit.conftest import SHARDS
from tests.audit.factories import ORIGIN, fill, person_event


def signed_at(log: AuditLog, keys: AuditKeys, continuity: Continuity, entries: int) -> Checkpoint:
    fill(log, entries, start=log.size())
    signed = Checkpointer(log, keys.signer, every_events=1).checkpoint()
    assert signed is not None
    continuity.remember(signed)
    return signed.checkpoint


def wipe(store: Store) -> None:
    keys = list(store.redis.scan_iter(match=f"{store.keys.prefix}*"))
    if keys:
        store.redis.delete(*keys)


def test_a_new_store_is_adopted_and_then_checked(audit_log: AuditLog, audit_keys: AuditKeys,
                                                 tmp_path: Path) -> None:
    continuity = Continuity(audit_log, audit_keys.signer, tmp_path)
    assert continuity.check() is None
    signed_at(audit_log, audit_keys, continuity, 5)
    fill(audit_log, 3, start=5)  # the log grows past the remembered checkpoint: fine
    assert continuity.check() is None
    assert Continuity(audit_log, audit_keys.signer, tmp_path).check() is None  # a restart


def test_redis_restarted_empty_is_refused_with_the_way_out(store: Store, audit_log: AuditLog,
                                                           audit_keys: AuditKeys, tmp_path: Path) -> None:
    continuity = Continuity(audit_log, audit_keys.signer, tmp_path)
    continuity.check()
    signed_at(audit_log, audit_keys, continuity, 4)
    wipe(store)
    fill(audit_log, 4)  # the new, unrelated log a careless restart would have started
    problem = Continuity(audit_log, audit_keys.signer, tmp_path).check()
    assert problem is not None
    assert "lost" in problem and "restore Redis" in problem and "gateway audit new-epoch" in problem


def test_a_shorter_log_is_refused(store: Store, audit_log: AuditLog, audit_keys: AuditKeys,
                                  tmp_path: Path) -> None:
    continuity = Continuity(audit_log, audit_keys.signer, tmp_path)
    continuity.check()
    signed_at(audit_log, audit_keys, continuity, 6)
    store.redis.set(store.keys.audit_size(), 3)  # an older backup
    problem = continuity.check()
    assert problem is not None and "has 3 entries" in problem


def test_a_rewritten_history_is_refused(store: Store, audit_log: AuditLog, audit_keys: AuditKeys,
                                        tmp_path: Path) -> None:
    continuity = Continuity(audit_log, audit_keys.signer, tmp_path)
    continuity.check()
    signed_at(audit_log, audit_keys, continuity, 4)
    store_id = store.get(store.keys.audit_store_id())
    wipe(store)
    assert store_id is not None
    store.redis.set(store.keys.audit_store_id(), store_id)  # same id, other entries
    fill(audit_log, 6, start=100)
    problem = continuity.check()
    assert problem is not None and "differ" in problem


def test_another_store_is_refused(store: Store, audit_log: AuditLog, audit_keys: AuditKeys,
                                  tmp_path: Path) -> None:
    continuity = Continuity(audit_log, audit_keys.signer, tmp_path)
    continuity.check()
    store.redis.set(store.keys.audit_store_id(), "f" * 32)
    problem = continuity.check()
    assert problem is not None and "another store" in problem


def test_a_new_epoch_is_signed_naming_the_old_logs_last_root(
    store: Store, audit_log: AuditLog, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    continuity = Continuity(audit_log, audit_keys.signer, tmp_path)
    continuity.check()
    old = signed_at(audit_log, audit_keys, continuity, 4)
    wipe(store)
    assert continuity.check() is not None
    checkpoint = continuity.new_epoch()
    assert continuity.check() is None and continuity.problem is None
    assert checkpoint.extensions[0].startswith("epoch 2 ")
    assert checkpoint.extensions[1].split() == ["previous-epoch", "1", "4",
                                                 __import__("base64").b64encode(old.root).decode()]
    latest = Checkpointer(audit_log, audit_keys.signer).latest()
    assert latest is not None
    assert verify_checkpoint(latest.note, [audit_keys.signer.verifier]).extensions == checkpoint.extensions
    assert (tmp_path / "audit" / "epochs.jsonl").read_text().count("\n") == 1


def test_the_remembered_checkpoint_only_moves_forward(audit_log: AuditLog, audit_keys: AuditKeys,
                                                      tmp_path: Path) -> None:
    continuity = Continuity(audit_log, audit_keys.signer, tmp_path)
    continuity.check()
    first = Checkpointer(audit_log, audit_keys.signer, every_events=1)
    fill(audit_log, 2)
    small = first.checkpoint()
    fill(audit_log, 2, start=2)
    large = first.checkpoint()
    assert small is not None and large is not None
    continuity.remember(large)
    continuity.remember(small)  # another worker, late
    remembered = continuity.file.load()
    assert remembered is not None and remembered.size == 4


def test_another_host_adopts_a_new_epoch_signed_on_the_record(
    store: Store, audit_log: AuditLog, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    mine = Continuity(audit_log, audit_keys.signer, here)
    theirs = Continuity(audit_log, audit_keys.signer, there)
    mine.check()
    theirs.check()
    signed_at(audit_log, audit_keys, mine, 3)
    wipe(store)
    assert mine.check() is not None and theirs.check() is not None
    mine.new_epoch()
    assert theirs.check() is None  # adopted from the signed epoch checkpoint
    remembered = theirs.file.load()
    assert remembered is not None and remembered.epoch == 2
    store.redis.set(store.keys.audit_store_id(), "e" * 32)  # an unsigned switch is not adopted
    assert theirs.check() is not None


def test_one_emptied_shard_stops_the_gateway_naming_the_shard(make_sharded: Callable[..., AuditService],
                                                              tmp_path: Path) -> None:
    service = make_sharded(data_dir=tmp_path / "data", every_events=5)
    continuity = service.continuity
    assert isinstance(continuity, ShardedContinuity) and continuity.check() is None
    for n in range(30):
        service.record(person_event(n))  # rounds of checkpoints, each remembered per shard
    remembered = [ContinuityFile(tmp_path / "data", shard).load() for shard in range(SHARDS)]
    assert all(r is not None and r.size > 0 for r in remembered)
    emptied = service.shards[1].log
    for key in list(emptied.store.redis.scan_iter(match=f"{emptied.store.keys.prefix}{{audit:1}}*")):
        emptied.store.redis.delete(key)
    problem = continuity.check()
    assert problem is not None and problem.startswith("audit shard 1: Redis has lost the gateway's data")
    broken = [shard.continuity.problem is not None for shard in service.shards if shard.continuity]
    assert broken == [False, True, False]
    with pytest.raises(ContinuityError):
        service.record(person_event(3))  # no shard takes events while one lost its data


def test_a_new_epoch_of_the_emptied_shard_lets_the_whole_log_verify_again(
        make_sharded: Callable[..., AuditService], tmp_path: Path) -> None:
    service = make_sharded(data_dir=tmp_path / "data", every_events=5)
    assert service.continuity is not None and service.continuity.check() is None
    for n in range(30):
        service.record(person_event(n))
    emptied = service.shards[2]
    for key in list(emptied.log.store.redis.scan_iter(match=f"{emptied.log.store.keys.prefix}{{audit:2}}*")):
        emptied.log.store.redis.delete(key)
    assert service.continuity.check() is not None and not service.verify().ok
    assert emptied.continuity is not None and service.combined is not None
    for n in range(6):  # as long as before, or longer: only the roots tell the histories apart
        emptied.log.append_event(person_event(n, actor_type="staff", actor_id="cli", person=None))
    checkpoint = emptied.continuity.new_epoch()
    assert checkpoint.origin == f"{ORIGIN}/2" and checkpoint.extensions[0].startswith("epoch 2 ")
    assert service.combined.forget_lost_history(2) > 0
    assert service.continuity.check() is None
    report = service.verify()
    assert report.ok, report.problem
    assert (tmp_path / "data" / "audit" / "epochs-2.jsonl").exists()
