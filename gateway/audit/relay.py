"""Relaying staged audit events from the persons' outboxes into the log.

A state change writes its events into the person's outbox in the same script
(:mod:`gateway.store.commits`); the request that made the change then relays them at once,
and if the log was unavailable, the background relay of any gateway process does it later.
Appends are idempotent by event id, so two relays racing on one outbox (or a relay dying
between the append and the removal) never append an event twice.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING

import redis
from pydantic import ValidationError

from gateway.audit.errors import AuditError
from gateway.audit.events import AuditEvent, canonical_json
from gateway.store.commits import Staged

if TYPE_CHECKING:
    from gateway.audit.service import AuditService
    from gateway.store import Store

log = logging.getLogger(__name__)

RELAY_INTERVAL_SECONDS = 1.0
RELAY_BATCH = 100


_SEQUENCE = itertools.count()


def stage(event: AuditEvent) -> Staged:
    """An event ready for an outbox: a fresh id and its canonical JSON. Ids sort in the order
    events were staged (nanosecond clock, then a per-process sequence, then randomness), which
    is the order the relay appends them in."""
    event_id = f"{time.time_ns():020d}{next(_SEQUENCE) % 10**6:06d}{secrets.token_hex(6)}"
    return Staged(event_id, canonical_json(event))


class OutboxRelay:
    def __init__(self, store: Store, audit: AuditService) -> None:
        self._commits = store.commits
        self._audit = audit

    def flush(self, person_id: str) -> int:
        """Append the person's staged events in the order they happened; returns how many.
        Raises (AuditError, RedisError) when the log cannot take them: they stay staged."""
        staged = self._commits.staged(person_id)
        events: list[tuple[AuditEvent, str]] = []
        broken: list[str] = []
        for item in staged:
            try:
                events.append((AuditEvent.model_validate_json(item.payload), item.event_id))
            except ValidationError:
                # Only this module writes outboxes; an entry that does not parse was altered.
                log.error("outbox entry unreadable, kept for inspection",
                          extra={"event_id": item.event_id})
                broken.append(item.event_id)
        events.sort(key=lambda pair: pair[1])
        done: list[str] = []
        try:
            for event, event_id in events:
                self._audit.record(event, event_id)
                done.append(event_id)
        finally:
            if done or not broken:
                self._commits.unstage(person_id, done)
        return len(done)

    def flush_pending(self, batch: int = RELAY_BATCH) -> int:
        """One pass over persons with staged events; returns how many events were appended."""
        total = 0
        for person_id in self._commits.pending(batch):
            total += self.flush(person_id)
        return total

    def start(self, stop: threading.Event, interval: float = RELAY_INTERVAL_SECONDS) -> threading.Thread:
        """Relay in a daemon thread until ``stop`` is set."""
        def loop() -> None:
            while not stop.wait(interval):
                try:
                    if self.flush_pending():
                        log.info("outbox relayed")
                except (AuditError, redis.RedisError) as error:
                    log.warning("outbox relay waiting for the audit log",
                                extra={"reason": type(error).__name__})
                except Exception as error:  # the relay thread must outlive any one bug
                    log.error("outbox relay failed", extra={"reason": type(error).__name__}, exc_info=error)

        thread = threading.Thread(target=loop, name="audit-outbox-relay", daemon=True)
        thread.start()
        return thread
