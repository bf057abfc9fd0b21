"""Code run in child processes by the concurrency test and the benchmark (importable by spawn)."""

from __future__ import annotations

from pathlib import Path

import redis

from gateway.audit import AuditLog, load_audit_keys
from gateway.store import Store
from tests.audit.factories import ORIGIN, make_event


def append_events(url: str, prefix: str, keys_dir: str, worker: int, count: int) -> list[tuple[int, str]]:
    """Append ``count`` events tagged with the worker; returns (index, request id) pairs."""
    client = redis.Redis.from_url(url)
    try:
        log = AuditLog(Store(client, prefix), load_audit_keys(Path(keys_dir), ORIGIN))
        appended = []
        for i in range(count):
            request_id = f"w{worker}-{i}"
            appended.append((log.append_event(make_event(i, request_id=request_id)).index, request_id))
        return appended
    finally:
        client.close()


def grow_and_tier(url: str, prefix: str, keys_dir: str, cold_dir: str, first: int) -> None:
    """Append, sign and move to the cold tier in a loop until killed (the kill test's victim)."""
    from gateway.audit import Checkpointer
    from gateway.audit.cold import FileColdStore, TierLayout
    from gateway.audit.tiering import Tiering
    from tests.audit.factories import person_event

    client = redis.Redis.from_url(url)
    keys = load_audit_keys(Path(keys_dir), ORIGIN)
    log = AuditLog(Store(client, prefix), keys, cold=FileColdStore(Path(cold_dir)),
                   layout=TierLayout(tile_height=2, redis_tile_width=8, chunk_entries=16))
    checkpointer = Checkpointer(log, keys.signer, every_events=1_000_000, every_seconds=3600)
    tiering = Tiering(log, checkpointer, hot_entries=20)
    n = first
    while True:
        for _ in range(10):
            log.append_event(person_event(n))
            n += 1
        checkpointer.checkpoint()
        tiering.move()
