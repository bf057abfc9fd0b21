"""Sentinel mode (issue 22, first step): the gateway asks Sentinels for the primary and
follows a failover without a restart. Real servers: one primary, one replica, three
Sentinels from Debian's redis-server on loopback ports (tests/redis_server.py)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.store.connection import open_store
from tests.conftest import ISSUER, Browser, ShopHandle, exchange_code, query_of, sign_in
from tests.redis_server import SentinelGroup

pytestmark = [pytest.mark.slow, pytest.mark.own_redis]


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "sentinel").start()
    yield group
    group.stop()


def server_errors(client: TestClient) -> list[object]:
    registry = client.app.state.gateway.metrics.registry  # type: ignore[attr-defined]
    return [s for m in registry.collect() for s in m.samples
            if s.name.endswith("_total") and s.labels.get("status", "") == "500" and s.value]


def test_a_sentinel_setting_must_name_host_and_port(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="host:port"):
        make_settings(redis_sentinels=["127.0.0.1"])


def test_unreachable_sentinels_stop_the_start_naming_the_setting(
        make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_REDIS_SENTINELS"):
        open_store(make_settings(redis_sentinels=["127.0.0.1:1"]))


def test_the_gateway_follows_a_sentinel_failover_without_restart(
        sentinels: SentinelGroup, make_settings: Callable[..., Settings], shop: ShopHandle) -> None:
    assert sentinels.primary and sentinels.replica
    app = create_app(make_settings(redis_sentinels=sentinels.addresses,
                                   redis_sentinel_master=sentinels.master_name))
    client = TestClient(app, base_url=ISSUER, follow_redirects=False, raise_server_exceptions=False)
    try:
        assert app.state.gateway.store.url.endswith(f":{sentinels.primary.port}/0")
        final, _, verifier = sign_in(Browser(client), shop)
        tokens = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
        # Everything acknowledged so far is on the replica; then the primary dies.
        primary = redis.Redis(port=sentinels.primary.port)
        assert int(primary.execute_command("WAIT", 1, 5000)) == 1
        primary.close()
        sentinels.primary.kill()

        deadline = time.monotonic() + 30
        statuses = []
        while True:  # 503 while there is no primary, never a 500
            statuses.append(client.get("/healthz/ready").status_code)
            if statuses[-1] == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert statuses[-1] == 200, statuses
        assert set(statuses) <= {200, 503}
        assert sentinels.current_primary_port() == sentinels.replica.port

        # The same process, no restart: what was issued before works on the new primary,
        # and new sign-ins work.
        refreshed = client.post("/token", data={"grant_type": "refresh_token",
                                                "refresh_token": tokens["refresh_token"]},
                                auth=(shop.client_id, shop.secret))
        assert refreshed.status_code == 200, refreshed.text
        userinfo = client.get("/userinfo", headers={
            "Authorization": f"Bearer {refreshed.json()['access_token']}"})
        assert userinfo.status_code == 200, userinfo.text
        final, _, verifier = sign_in(Browser(client), shop, person="han-meimei")
        again = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier)
        assert again.status_code == 200, again.text
        assert not server_errors(client)
    finally:
        client.close()
        app.state.gateway.store.close()


def withdraw_everything(browser: Browser, shop: ShopHandle) -> int:
    page = browser.follow("/account?lang=en")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return browser.request("POST", "/account/withdraw", content=urlencode(
        {"csrf": csrf.group(1), "shop": shop.client_id, "confirm": "yes"}),
        headers={"content-type": "application/x-www-form-urlencoded"}).status_code


def wait_until_ready(client: TestClient, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while client.get("/healthz/ready").status_code != 200:
        assert time.monotonic() < deadline, "no primary in time"
        time.sleep(0.2)


def test_an_acknowledged_withdrawal_survives_a_failover_right_after_it(
        sentinels: SentinelGroup, make_settings: Callable[..., Settings], shop: ShopHandle) -> None:
    """With redis_wait_replicas=1 a consent change is acknowledged only once a replica has it,
    so killing the primary the moment the person sees "done" loses nothing."""
    assert sentinels.primary and sentinels.replica
    app = create_app(make_settings(redis_sentinels=sentinels.addresses, redis_wait_replicas=1,
                                   redis_sentinel_master=sentinels.master_name))
    client = TestClient(app, base_url=ISSUER, follow_redirects=False, raise_server_exceptions=False)
    try:
        browser = Browser(client)
        final, _, verifier = sign_in(browser, shop)
        tokens = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
        assert withdraw_everything(browser, shop) == 303
        sentinels.primary.kill()  # no WAIT from the test: the gateway's own is all there is
        wait_until_ready(client)
        assert sentinels.current_primary_port() == sentinels.replica.port
        refreshed = client.post("/token", data={"grant_type": "refresh_token",
                                                "refresh_token": tokens["refresh_token"]},
                                auth=(shop.client_id, shop.secret))
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
        assert not server_errors(client)
    finally:
        client.close()
        app.state.gateway.store.close()


def test_a_consent_change_no_replica_confirms_is_not_acknowledged(
        sentinels: SentinelGroup, make_settings: Callable[..., Settings], shop: ShopHandle) -> None:
    assert sentinels.replica
    app = create_app(make_settings(redis_sentinels=sentinels.addresses, redis_wait_replicas=1,
                                   redis_wait_timeout_ms=300, redis_sentinel_master=sentinels.master_name))
    client = TestClient(app, base_url=ISSUER, follow_redirects=False, raise_server_exceptions=False)
    try:
        browser = Browser(client)
        sign_in(browser, shop)
        sentinels.replica.pause()
        try:
            assert withdraw_everything(browser, shop) == 503  # never "done" without its replica
        finally:
            sentinels.replica.resume()
        assert not server_errors(client)
    finally:
        client.close()
        app.state.gateway.store.close()
