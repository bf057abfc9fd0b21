"""Audit appends per second and Redis bytes per audit event, through the gateway's own API.

Runs in this process against the same Redis server, under the run's own audit prefix, with
:class:`gateway.audit.AuditService` exactly as the gateway would hold it (append in one Lua
round trip, a signed checkpoint every 1,000 events). One client appending back to back: the
latency of one append and the rate a single connection sustains. ``bench/audit_bench.py``
measures several processes and proofs.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.loadgen import percentile_ms
from bench.redis_meter import escape_pattern, memory_usage, scan_keys


def audit_available() -> bool:
    if importlib.util.find_spec("gateway.audit") is None:
        return False
    from gateway import audit

    return hasattr(audit, "AuditService") and hasattr(audit.AuditService, "record")


def measure_audit(redis_url: str, prefix: str, seconds: float) -> dict[str, Any]:
    if not audit_available():
        return {"available": False, "note": "not available yet (no gateway.audit.AuditService.record)"}
    from gateway.audit import AuditEvent, AuditService
    from gateway.store import Store

    client = redis.Redis.from_url(redis_url)
    try:
        with tempfile.TemporaryDirectory(prefix="cgperf-audit-") as keys:
            service = AuditService(Store(client, prefix), Path(keys), "bench.invalid/audit")
            latencies: list[float] = []
            deadline = time.perf_counter() + seconds
            began = time.perf_counter()
            n = 0
            while time.perf_counter() < deadline:
                event = AuditEvent(actor_type="shop", actor_id="bench-shop", action="userinfo_read",
                                   person=f"p-{n % 1000:04d}", shop="bench-shop",
                                   fields=("email", "nickname", "phone"), purpose="account",
                                   policy_version="1", request_id=f"r{n}")
                start = time.perf_counter()
                service.record(event)
                latencies.append(time.perf_counter() - start)
                n += 1
            elapsed = time.perf_counter() - began
            keys_in_redis = scan_keys(client, f"{escape_pattern(prefix)}*")
            sizes = memory_usage(client, keys_in_redis)
    finally:
        client.close()
    ordered = sorted(latencies)
    total_bytes = sum(sizes.values())
    return {
        "available": True,
        "events": n,
        "appends_per_s": round(n / elapsed, 1) if elapsed else 0.0,
        "p50_ms": percentile_ms(ordered, 0.5),
        "p99_ms": percentile_ms(ordered, 0.99),
        "redis_bytes": total_bytes,
        "bytes_per_event": round(total_bytes / n, 1) if n else None,
        "note": "one client, back to back, including a signed checkpoint every 1,000 events; "
                "bytes: MEMORY USAGE SAMPLES 0 over every audit key (entries, head, indexes, tiles, "
                "checkpoints) divided by the events",
    }
