"""Persistence is checked at start, and the embedded Redis is shared, never stopped by a guest."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.store import open_store
from tests.redis_server import RedisServer

pytestmark = pytest.mark.own_redis  # embedded or throwaway servers


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(**{"issuer": "https://gateway.test", "data_dir": tmp_path / "data",
                       "keys_dir": tmp_path / "keys", **values})  # type: ignore[arg-type]


def test_a_redis_that_keeps_nothing_on_disk_is_refused_outside_demo_mode(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    try:
        with pytest.raises(ConfigError, match="keeps nothing on disk"):
            open_store(settings(tmp_path, redis_url=server.url), serving=True)
        open_store(settings(tmp_path, redis_url=server.url, demo=True), serving=True).close()
        open_store(settings(tmp_path, redis_url=server.url)).close()  # a CLI command: allowed
    finally:
        server.kill()


def test_asserting_persistence_lets_a_managed_redis_through_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=False).start()
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.store.connection"):
            open_store(settings(tmp_path, redis_url=server.url, redis_assume_persistent=True),
                       serving=True).close()
        assert "ASSUME_PERSISTENT" in caplog.text
    finally:
        server.kill()


def test_a_persistent_redis_is_accepted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        open_store(settings(tmp_path, redis_url=server.url), serving=True).close()
    finally:
        server.kill()


def test_the_embedded_redis_passes_the_persistence_check(tmp_path: Path) -> None:
    open_store(settings(tmp_path, redis_url=""), serving=True).close()


def test_a_second_process_joins_the_embedded_redis_and_never_stops_it(tmp_path: Path) -> None:
    owner = open_store(settings(tmp_path, demo=True, redis_url=""))
    try:
        owner.redis.set("cg:probe", "1")
        guest = open_store(settings(tmp_path, demo=True, redis_url=""))  # a CLI command in the same data dir
        assert guest.get("cg:probe") == b"1"
        guest.close()
        assert owner.ping()
        # A real second process: a CLI command beside the "running gateway".
        env = {**os.environ, "GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_DEMO": "true",
               "GATEWAY_KEYS_DIR": str(tmp_path / "keys"), "GATEWAY_REDIS_URL": ""}
        done = subprocess.run([str(Path(sys.executable).with_name("gateway")), "audit", "verify"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert owner.ping() and owner.get("cg:probe") == b"1"
    finally:
        owner.close()
