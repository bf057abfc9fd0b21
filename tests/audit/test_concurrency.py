"""Appends from many threads and processes form one total order with an unbroken chain."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from gateway.audit import AuditKeys, AuditLog, AuditService, decode_event, verify_log
from gateway.audit.records import ZERO_HASH, StoredEntry
from gateway.store import Store
from tests.audit.factories import make_event, person_event
from tests.audit.workers import append_events


def assert_one_unbroken_order(log: AuditLog, appended: list[list[tuple[int, str]]]) -> None:
    total = sum(len(batch) for batch in appended)
    indexes = sorted(index for batch in appended for index, _ in batch)
    assert indexes == list(range(total)), "every index exactly once, no gaps"
    for batch in appended:  # each writer's own events keep their order
        assert [index for index, _ in batch] == sorted(index for index, _ in batch)
    entries = [e for e in log.read_entries(list(range(total))) if isinstance(e, StoredEntry)]
    assert len(entries) == total
    by_index = {index: request for batch in appended for index, request in batch}
    assert all(decode_event(e.event).request_id == by_index[e.index] for e in entries)
    previous = ZERO_HASH
    for entry in entries:
        assert entry.prev == previous, f"chain broken at {entry.index}"
        previous = entry.leaf_hash()
    report = verify_log(log)
    assert report.ok, report.problem


def test_threads_appending_at_once_get_one_order_and_an_unbroken_chain(audit_log: AuditLog) -> None:
    def work(worker: int) -> list[tuple[int, str]]:
        return [(audit_log.append_event(make_event(i, request_id=f"t{worker}-{i}")).index, f"t{worker}-{i}")
                for i in range(60)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        appended = list(pool.map(work, range(8)))
    assert_one_unbroken_order(audit_log, appended)


def test_processes_appending_at_once_get_one_order_and_an_unbroken_chain(
    audit_log: AuditLog, audit_keys: AuditKeys, audit_keys_dir: Path, store: Store
) -> None:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        futures = [pool.submit(append_events, store.url, store.keys.prefix, str(audit_keys_dir), w, 150)
                   for w in range(4)]
        appended = [future.result(timeout=120) for future in futures]
    assert_one_unbroken_order(audit_log, appended)


def test_sealing_while_others_append_stays_consistent(audit_log: AuditLog) -> None:
    def append(worker: int) -> list[tuple[int, str]]:
        return [(audit_log.append_event(make_event(i, request_id=f"s{worker}-{i}")).index, f"s{worker}-{i}")
                for i in range(80)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        writers = [pool.submit(append, w) for w in range(4)]
        sealers = [pool.submit(audit_log.seal) for _ in range(2)]
        appended = [w.result() for w in writers]
        for sealer in sealers:
            sealer.result()
    audit_log.seal()
    assert_one_unbroken_order(audit_log, appended)


def test_threads_recording_into_shards_while_rounds_are_signed_leave_everything_verifiable(
        make_sharded: Callable[..., AuditService]) -> None:
    service = make_sharded(every_events=7)  # rounds signed inline, racing for shard 0's lock

    def work(worker: int) -> list[tuple[int, int, str]]:
        recorded = []
        for i in range(40):
            appended = service.record(person_event(worker * 40 + i, request_id=f"t{worker}-{i}"))
            recorded.append((appended.shard, appended.index, f"t{worker}-{i}"))
        return recorded

    with ThreadPoolExecutor(max_workers=6) as pool:
        recorded = [row for batch in pool.map(work, range(6)) for row in batch]
    for shard in service.shards:
        mine = sorted((index, request) for s, index, request in recorded if s == shard.log.shard)
        assert [index for index, _ in mine] == list(range(shard.log.size()))
    assert service.combined is not None and service.combined.latest() is not None
    report = service.verify()
    assert report.ok, report.problem
    assert report.size == 240
