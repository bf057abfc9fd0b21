"""Checkpoints are signed every N events or T seconds, stored in Redis and listed in order."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest

from gateway.audit import AuditLog, Checkpointer, verify_checkpoint
from gateway.audit.merkle import verify_consistency
from tests.audit.factories import ORIGIN, fill, make_event


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_checkpoint_is_signed_every_n_events(audit_log: AuditLog,
                                               make_checkpointer: Callable[..., Checkpointer]) -> None:
    checkpointer = make_checkpointer(every_events=10, every_seconds=3600)
    signed_at = []
    for n in range(35):
        appended = audit_log.append_event(make_event(n))
        if checkpointer.after_append(appended.index):
            signed_at.append(appended.index + 1)
    assert signed_at == [10, 20, 30]
    assert [c.checkpoint.size for c in checkpointer.history()] == [10, 20, 30]


def test_a_checkpoint_is_signed_after_t_seconds_if_the_log_grew(
    audit_log: AuditLog, make_checkpointer: Callable[..., Checkpointer]
) -> None:
    clock = FakeClock()
    checkpointer = make_checkpointer(every_events=1000, every_seconds=60, clock=clock)
    fill(audit_log, 3)
    assert checkpointer.maybe_checkpoint() is None  # the clock starts with the checkpointer
    clock.now += 60
    first = checkpointer.maybe_checkpoint()
    assert first is not None and first.checkpoint.size == 3
    fill(audit_log, 2, start=3)
    clock.now += 59
    assert checkpointer.maybe_checkpoint() is None
    clock.now += 1
    second = checkpointer.maybe_checkpoint()
    assert second is not None and second.checkpoint.size == 5
    clock.now += 600
    assert checkpointer.maybe_checkpoint() is None  # nothing new to sign


def test_stored_checkpoints_verify_and_are_consistent_with_each_other(
    audit_log: AuditLog, make_checkpointer: Callable[..., Checkpointer]
) -> None:
    checkpointer = make_checkpointer(every_events=7)
    for n in range(30):
        checkpointer.after_append(audit_log.append_event(make_event(n)).index)
    history = checkpointer.history()
    verifier = checkpointer.signer.verifier
    for older, newer in itertools.pairwise(history):
        a = verify_checkpoint(older.note, [verifier], ORIGIN)
        b = verify_checkpoint(newer.note, [verifier], ORIGIN)
        proof = audit_log.consistency_proof(a.size, b.size)
        assert verify_consistency(a.size, b.size, a.root, b.root, proof)
    assert checkpointer.latest() == history[-1]
    assert checkpointer.at_size(14) == history[1]
    assert checkpointer.at_size(15) is None


def test_only_one_process_signs_at_a_time(audit_log: AuditLog,
                                          make_checkpointer: Callable[..., Checkpointer]) -> None:
    fill(audit_log, 50)
    checkpointers = [make_checkpointer() for _ in range(6)]
    barrier = threading.Barrier(6)

    def sign(c: Checkpointer) -> int:
        barrier.wait()
        return 0 if c.checkpoint() is None else 1

    threads_signed = []
    workers = [threading.Thread(target=lambda c=c: threads_signed.append(sign(c))) for c in checkpointers]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(checkpointers[0].history()) == 1


def test_signing_the_same_size_twice_is_skipped(audit_log: AuditLog,
                                                make_checkpointer: Callable[..., Checkpointer]) -> None:
    checkpointer = make_checkpointer()
    fill(audit_log, 4)
    assert checkpointer.checkpoint() is not None
    assert checkpointer.checkpoint() is None
    assert len(checkpointer.history()) == 1


def test_the_timer_thread_signs_in_quiet_periods(audit_log: AuditLog,
                                                 make_checkpointer: Callable[..., Checkpointer]) -> None:
    checkpointer = make_checkpointer(every_events=1000, every_seconds=0.05)
    fill(audit_log, 2)
    stop = threading.Event()
    thread = threading.Thread(target=checkpointer.run, args=(stop, 0.01))
    thread.start()
    try:
        for _ in range(200):
            if checkpointer.latest() is not None:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join()
    latest = checkpointer.latest()
    assert latest is not None and latest.checkpoint.size == 2


def test_intervals_must_be_positive(make_checkpointer: Callable[..., Checkpointer]) -> None:
    with pytest.raises(ValueError):
        make_checkpointer(every_events=0)
