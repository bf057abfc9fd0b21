"""Opening the store: the configured server, or an embedded Redis with AOF persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.store import open_store

pytestmark = pytest.mark.own_redis  # embedded or throwaway servers


def test_embedded_redis_starts_with_append_only_persistence(tmp_path: Path) -> None:
    store = open_store(Settings(redis_url="", data_dir=tmp_path / "data"))
    try:
        assert store.ping()
        assert store.redis.config_get("appendonly") == {"appendonly": "yes"}
        assert store.url.startswith("unix://")
        store.redis.set("probe", "1")
    finally:
        store.close()
    assert any(p.name.startswith("appendonly") for p in (tmp_path / "data").iterdir())


def test_unreachable_redis_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_REDIS_URL"):
        open_store(Settings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path))
