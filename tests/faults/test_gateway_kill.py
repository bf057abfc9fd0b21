"""A gateway SIGKILLed mid-burst: the log verifies afterwards, nothing is recorded twice, and
every token a shop received is on the record (real gateway and Redis processes)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2 as httpx
import pytest

from gateway.oidc.clients import issue_client_secret
from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in
from tests.faults.gateway_process import GatewayProcess
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.own_redis]


def burst(gateway: GatewayProcess, shop: ShopHandle, stop: threading.Event,
          issued: list[str], lock: threading.Lock) -> None:
    while not stop.is_set():
        try:
            with httpx.Client(base_url=gateway.url, timeout=5) as client:
                final, _, verifier = sign_in(Browser(client, gateway.url), shop, scope="openid profile")
                code = query_of(final.headers["location"]).get("code")
                if not code:
                    continue
                reply = exchange_code(client, shop, code, verifier)
                if reply.status_code == 200:
                    with lock:
                        issued.append(reply.headers["x-request-id"])
                    bearer = {"Authorization": f"Bearer {reply.json()['access_token']}"}
                    client.get("/userinfo", headers=bearer)
        except (httpx.HTTPError, KeyError, AssertionError):
            time.sleep(0.1)  # the gateway is down: try again


def test_a_gateway_killed_mid_burst_leaves_a_log_that_verifies(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path / "redis").start()
    gateway = GatewayProcess(tmp_path / "gw", redis_server.url, workers=2)
    secret = issue_client_secret(tmp_path / "gw" / "keys", "demo-shop")
    shop = ShopHandle("demo-shop", secret, "http://127.0.0.1:8001/callback")
    issued: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    try:
        gateway.start()
        threads = [threading.Thread(target=burst, args=(gateway, shop, stop, issued, lock)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for _ in range(2):  # two kills in the middle of the burst
            time.sleep(3)
            assert gateway.process is not None
            os.killpg(gateway.process.pid, signal.SIGKILL)
            gateway.process.wait(timeout=10)
            gateway.start()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert len(issued) > 5, "the burst did not get going"
        checked = gateway.cli("audit", "verify")
        assert checked.returncode == 0 and checked.stdout.startswith("ok"), checked.stdout + checked.stderr
        export = tmp_path / "log.jsonl"
        assert gateway.cli("audit", "export", "--output", str(export), "--format", "jsonl").returncode == 0
        events = [json.loads(line) for line in export.read_text().splitlines() if line.strip()]
        events = [e.get("event", e) for e in events]
        per_request = Counter((e["request_id"], e["action"]) for e in events if e.get("request_id"))
        assert [key for key, n in per_request.items() if n > 1] == []  # nothing recorded twice
        recorded = {e["request_id"] for e in events if e["action"] == "token_issued"}
        assert [rid for rid in issued if rid not in recorded] == []  # no token released unrecorded
    finally:
        stop.set()
        gateway.stop()
        redis_server.kill()
