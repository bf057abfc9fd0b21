"""Redis comes back empty after checkpoints were signed: the gateway refuses and says why, and
``gateway audit new-epoch`` continues on the record (real gateway and Redis processes)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.faults.gateway_process import GatewayProcess
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.own_redis]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def status(url: str, **headers: str) -> int:
    try:
        return httpx.get(url, headers=headers, timeout=3).status_code
    except httpx.HTTPError:
        return -1


def started_with_a_remembered_checkpoint(gateway: GatewayProcess) -> None:
    """Start records policy_loaded events; a checkpoint over them is signed within a second
    and remembered in the data directory."""
    continuity = gateway.root / "data" / "audit" / "continuity.json"
    gateway.start()
    wait_for(lambda: continuity.exists() and json.loads(continuity.read_text())["size"] > 0, 15,
             "a checkpoint is remembered")


def test_redis_restarted_empty_is_refused_until_a_new_epoch_is_opened(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    gateway = GatewayProcess(tmp_path / "gw", redis_server.url)
    try:
        started_with_a_remembered_checkpoint(gateway)
        assert status(f"{gateway.url}/healthz") == 200

        redis_server.wipe()
        redis_server.start()  # same port, nothing on disk: an empty Redis
        seconds = wait_for(lambda: status(f"{gateway.url}/healthz") == 503, 15, "the gateway refuses")
        assert seconds < 10
        api = httpx.get(f"{gateway.url}/.well-known/openid-configuration", timeout=3)
        assert api.status_code == 503 and api.json()["error"] == "temporarily_unavailable"
        assert api.headers["retry-after"] and api.headers.get("x-request-id")
        page = httpx.get(f"{gateway.url}/account", timeout=3)
        assert page.status_code == 503 and "<html" in page.text.lower()
        log = gateway.log_file.read_text()
        assert "audit continuity broken" in log and "gateway audit new-epoch" in log
        # Nothing was written to the empty Redis meanwhile (no new log, no new store id).
        assert status(f"{gateway.url}/healthz") == 503

        verify = gateway.cli("audit", "new-epoch", "--yes")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "previous-epoch 1" in verify.stdout
        wait_for(lambda: status(f"{gateway.url}/healthz") == 200, 15, "the gateway serves again")
        checked = gateway.cli("audit", "verify")
        assert checked.returncode == 0 and checked.stdout.startswith("ok"), checked.stdout + checked.stderr
    finally:
        gateway.stop()
        redis_server.kill()


def test_a_gateway_restarted_on_an_emptied_redis_refuses_from_the_start(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    gateway = GatewayProcess(tmp_path / "gw", redis_server.url)
    try:
        started_with_a_remembered_checkpoint(gateway)
        gateway.stop()
        redis_server.wipe()
        redis_server.start()
        gateway.start()
        assert status(f"{gateway.url}/healthz") == 503
        assert status(f"{gateway.url}/jwks") == 503
    finally:
        gateway.stop()
        redis_server.kill()


def test_a_gateway_on_a_redis_without_persistence_refuses_to_start(tmp_path: Path) -> None:
    import secrets

    redis_server = RedisServer(tmp_path / "redis", persistent=False).start()
    gateway = GatewayProcess(tmp_path / "gw", redis_server.url, extra_env={
        "GATEWAY_DEMO": "false", "GATEWAY_MASTER_KEY": secrets.token_hex(32),
        "GATEWAY_ISSUER": "https://gateway.test"})
    try:
        assert gateway.cli("keys", "init").returncode == 0
        served = gateway.cli("serve", "--port", str(gateway.port), timeout=60)
        assert served.returncode != 0
        assert "keeps nothing on disk" in served.stdout + served.stderr
        assert (served.stdout + served.stderr).strip().count("\n") == 0  # one line
    finally:
        redis_server.kill()
