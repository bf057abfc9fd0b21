"""Fixtures for audit tests: keys in a temporary keys/ directory, a log on the test store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditKeys, AuditLog, AuditService, Checkpointer, load_audit_keys
from gateway.store import Store
from tests.audit.factories import ORIGIN


@pytest.fixture
def audit_keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def audit_keys(audit_keys_dir: Path) -> AuditKeys:
    return load_audit_keys(audit_keys_dir, ORIGIN)


@pytest.fixture
def audit_log(store: Store, audit_keys: AuditKeys) -> AuditLog:
    return AuditLog(store, audit_keys)


@pytest.fixture
def make_checkpointer(audit_log: AuditLog, audit_keys: AuditKeys) -> Callable[..., Checkpointer]:
    def make(**options: Any) -> Checkpointer:
        return Checkpointer(audit_log, audit_keys.signer, **options)

    return make


SHARDS = 3


@pytest.fixture
def make_sharded(store: Store, audit_keys_dir: Path) -> Callable[..., AuditService]:
    """An AuditService over SHARDS shards on the test store (checkpoints only when asked)."""
    def make(**options: Any) -> AuditService:
        values: dict[str, Any] = {"every_events": 1_000_000, "every_seconds": 3600, "shards": SHARDS}
        return AuditService(store, audit_keys_dir, ORIGIN, **(values | options))

    return make


@pytest.fixture
def sharded(make_sharded: Callable[..., AuditService]) -> AuditService:
    return make_sharded()
