"""Plain helpers shared by the audit tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from gateway.audit import AuditEvent, AuditLog

ORIGIN = "gateway.test/audit"


def make_event(n: int = 0, **overrides: Any) -> AuditEvent:
    """A plausible event; ``n`` varies the person, shop, time and request id."""
    values: dict[str, Any] = {
        "time": f"2025-03-01T{8 + n // 3600 % 12:02d}:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z",
        "actor_type": "shop",
        "actor_id": f"shop-{n % 3}",
        "action": "userinfo_read",
        "person": f"p-{n % 7}",
        "shop": f"shop-{n % 3}",
        "fields": ["nickname", "phone"],
        "purpose": "delivery_contact",
        "policy_version": "3",
        "request_id": f"req-{n}",
    }
    values.update(overrides)
    return AuditEvent(**values)


def fill(log: AuditLog, count: int, start: int = 0) -> list[bytes]:
    """Append ``count`` events; returns their leaf hashes."""
    return [log.append_event(make_event(start + i)).leaf_hash for i in range(count)]


def person_event(n: int, **overrides: Any) -> AuditEvent:
    """Event ``n`` of person ``person-<n % 40>``: many persons, so every shard gets some."""
    return make_event(n, **({"person": f"person-{n % 40}"} | overrides))
