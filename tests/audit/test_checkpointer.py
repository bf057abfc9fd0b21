"""Checkpoints are signed every N events or T seconds, stored in Redis and listed in order."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditLog, Checkpointer, verify_checkpoint
from gateway.audit.checkpointer import LOCK_TTL_MS
from gateway.audit.merkle import verify_consistency
from gateway.store import Store
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


# -- the checkpoint lock: short, renewed while held, fenced, released ------------------


def test_the_lock_is_short_and_renewed_while_signing(audit_log: AuditLog, store: Store,
                                                     make_checkpointer: Callable[..., Checkpointer],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert LOCK_TTL_MS <= 10_000  # a killed signer delays the others by seconds, not a minute
    fill(audit_log, 5)
    checkpointer = make_checkpointer()
    checkpointer.lock_ttl_ms = 300
    lock = store.keys.audit_checkpoint_lock()
    seen: list[int] = []
    sealing = audit_log.root

    def slow_root(size: int) -> bytes:
        for _ in range(10):  # a second of sealing: three TTLs
            time.sleep(0.1)
            seen.append(int(store.redis.pttl(lock)))
        return sealing(size)

    monkeypatch.setattr(audit_log, "root", slow_root)
    signed = checkpointer.checkpoint()
    assert signed is not None and signed.checkpoint.size == 5
    assert all(0 < ttl <= 300 for ttl in seen), seen  # never expired, never longer than the TTL
    assert store.redis.exists(lock) == 0  # released after signing


def test_a_signer_that_lost_the_lock_stores_nothing(audit_log: AuditLog, store: Store,
                                                    make_checkpointer: Callable[..., Checkpointer],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fill(audit_log, 3)
    checkpointer = make_checkpointer()
    lock = store.keys.audit_checkpoint_lock()
    sealing = audit_log.root

    def paused_past_the_ttl(size: int) -> bytes:
        store.redis.set(lock, "another-holder", px=5000)  # ours expired; someone else signs now
        return sealing(size)

    monkeypatch.setattr(audit_log, "root", paused_past_the_ttl)
    assert checkpointer.checkpoint() is None
    assert checkpointer.history() == []
    assert store.redis.get(lock) == b"another-holder"  # the new holder's lock is left alone


def test_releasing_at_shutdown_lets_another_process_sign_at_once(
        audit_log: AuditLog, store: Store, make_checkpointer: Callable[..., Checkpointer],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the app's lifespan does when the checkpoint thread outlives its join: the lock is
    freed at once, and the late signer's checkpoint is not stored (it no longer holds it)."""
    fill(audit_log, 4)
    stopping, first = make_checkpointer(), make_checkpointer()
    entered, proceed = threading.Event(), threading.Event()
    sealing = audit_log.root

    def blocked(size: int) -> bytes:
        entered.set()
        proceed.wait(10)
        return sealing(size)

    monkeypatch.setattr(audit_log, "root", blocked)
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(stopping.checkpoint()))
    worker.start()
    assert entered.wait(5)
    assert first.checkpoint() is None  # locked
    assert stopping.release_lock() is True
    monkeypatch.setattr(audit_log, "root", sealing)
    other = first.checkpoint()
    assert other is not None and other.checkpoint.size == 4
    proceed.set()
    worker.join(10)
    assert results == [None]
    assert [c.checkpoint.size for c in first.history()] == [4]
    assert stopping.release_lock() is False  # nothing held any more


def test_the_app_releases_a_held_lock_when_it_stops(make_settings: Callable[..., Any], store: Store) -> None:
    from starlette.testclient import TestClient

    from gateway.app import create_app

    app = create_app(make_settings(), store=store)
    lock = store.keys.audit_checkpoint_lock()
    with TestClient(app):
        checkpointer = app.state.gateway.provider.audit.checkpointer
        checkpointer._held = "mine"  # as if the checkpoint thread were mid-signing
        store.redis.set(lock, "mine", px=60_000)
    assert store.redis.exists(lock) == 0


SIGNER = """
import sys, time
from pathlib import Path
from gateway.audit import AuditLog, Checkpointer, load_audit_keys
from gateway.store import Store
from tests.live import redis_for

url, prefix, keys_dir, origin = sys.argv[1:5]
store = Store(redis_for(url), prefix)
keys = load_audit_keys(Path(keys_dir), origin)
log = AuditLog(store, keys)
def hang(size):
    print("signing", flush=True)
    time.sleep(600)
log.root = hang
Checkpointer(log, keys.signer).checkpoint()
"""


def test_a_signer_killed_mid_signing_delays_the_others_by_seconds(
        audit_log: AuditLog, store: Store, audit_keys_dir: Path,
        make_checkpointer: Callable[..., Checkpointer]) -> None:
    fill(audit_log, 6)
    signer = subprocess.Popen(
        [sys.executable, "-c", SIGNER, store.url, store.keys.prefix, str(audit_keys_dir), ORIGIN],
        stdout=subprocess.PIPE, text=True)
    try:
        assert signer.stdout is not None and signer.stdout.readline().strip() == "signing"
        assert store.redis.exists(store.keys.audit_checkpoint_lock())
        signer.send_signal(signal.SIGKILL)
        signer.wait(5)
        killed = time.monotonic()
        checkpointer = make_checkpointer()
        while (signed := checkpointer.checkpoint()) is None:
            assert time.monotonic() - killed < LOCK_TTL_MS / 1000 + 2, "the lock outlived its TTL"
            time.sleep(0.1)
        delay = time.monotonic() - killed
        print(f"checkpoint signed {delay:.2f} s after the signer was killed")
        assert signed.checkpoint.size == 6 and delay <= LOCK_TTL_MS / 1000 + 0.5
    finally:
        if signer.poll() is None:
            signer.kill()
            signer.wait(5)
        if signer.stdout is not None:
            signer.stdout.close()
