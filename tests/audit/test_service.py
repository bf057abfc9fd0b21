"""AuditService: what the OIDC flows, the staff API and the CLI call."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.audit import AuditFilter, AuditService, NoteVerifier, verify_proof
from gateway.store import Store
from tests.audit.factories import ORIGIN, make_event


@pytest.fixture
def service(store: Store, tmp_path: Path) -> AuditService:
    return AuditService(store, tmp_path / "keys", ORIGIN, every_events=5, every_seconds=3600)


def test_record_appends_and_checkpoints_every_n_events(service: AuditService) -> None:
    indexes = [service.record(make_event(n)).index for n in range(12)]
    assert indexes == list(range(12))
    assert [c.checkpoint.size for c in service.checkpointer.history()] == [5, 10]


def test_a_person_gets_a_proof_that_checks_with_the_published_key(service: AuditService) -> None:
    for n in range(7):
        service.record(make_event(n))
    text = service.prove(6).to_text()
    checkpoint, event = verify_proof(text, [NoteVerifier.from_string(service.verifier_key)], ORIGIN)
    assert checkpoint.size == 7 and event.request_id == "req-6"


def test_verify_reports_a_healthy_log(service: AuditService) -> None:
    for n in range(8):
        service.record(make_event(n))
    report = service.verify()
    assert report.ok and report.latest_checkpoint == 5 and report.unsigned_tail == 3


def test_queries_go_through_the_service(service: AuditService) -> None:
    for n in range(14):
        service.record(make_event(n))
    page = service.query.page(AuditFilter(person="p-2"))
    assert [logged.index for logged in page.items] == [2, 9]


def test_a_failing_checkpoint_does_not_fail_the_recorded_event(service: AuditService, store: Store) -> None:
    for n in range(4):
        service.record(make_event(n))
    store.redis.hset(store.keys.audit_entries(), "1", b"garbage" * 20)  # sealing will refuse
    appended = service.record(make_event(4))  # the 5th event: a checkpoint is due and fails
    assert appended.index == 4
    assert service.checkpointer.history() == []


def test_with_the_checkpoint_thread_running_record_leaves_sealing_to_it(service: AuditService) -> None:
    stop = threading.Event()
    thread = service.start_checkpointing(stop)
    try:
        for n in range(6):
            service.record(make_event(n))
        for _ in range(300):
            if service.checkpointer.latest() is not None:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(timeout=5)
    latest = service.checkpointer.latest()
    assert latest is not None and latest.checkpoint.size >= 5


def test_the_checkpoint_thread_stops_when_asked(service: AuditService) -> None:
    stop = threading.Event()
    thread = service.start_checkpointing(stop)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
