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
