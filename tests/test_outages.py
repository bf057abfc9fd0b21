"""A Redis outage is answered 503 ``temporarily_unavailable`` on every route, never 500.

The app is built on a working store (start-up writes to Redis), then the store's client is
pointed at a closed loopback port, or made to raise a given RedisError: every request that
needs Redis must then get 503 with ``Retry-After`` and ``x-request-id`` — JSON on the shop
and staff APIs, the error page on the person's pages — and the probes must tell "alive" from
"ready". The real-process version (SIGSTOP, SIGKILL, restart) is tests/faults/test_redis_outage.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from gateway.app import create_app, is_page
from gateway.audit.staff import new_staff_token
from gateway.config import Settings
from gateway.oidc.sessions import SESSION_COOKIE
from gateway.store import Store
from gateway.web.audit_api import STAFF_COOKIE
from tests.conftest import ISSUER, ShopHandle, authorize_params, pkce_pair
from tests.live import free_port

# These break a single server's connection pool; on a cluster, outages are the failover and
# resharding tests of tests/store/test_cluster.py.
pytestmark = pytest.mark.own_redis


class Outage:
    """Switches the store's Redis client between its server and a closed port."""

    def __init__(self, store: Store) -> None:
        self.pool = store.redis.connection_pool
        self.kwargs = dict(self.pool.connection_kwargs)

    def begin(self) -> None:
        self.pool.connection_kwargs.update(host="127.0.0.1", port=free_port(), path=None)
        self.pool.connection_kwargs.pop("path", None)
        self.pool.reset()

    def end(self) -> None:
        self.pool.connection_kwargs.clear()
        self.pool.connection_kwargs.update(self.kwargs)
        self.pool.reset()


@pytest.fixture
def outage(store: Store) -> Iterator[Outage]:
    switch = Outage(store)
    yield switch
    switch.end()  # before the store fixture deletes the test's keys


@pytest.fixture
def gateway_client(make_settings: Callable[..., Settings], store: Store,
                   shop: ShopHandle) -> Iterator[tuple[TestClient, str]]:
    staff_token, digest = new_staff_token()
    app = create_app(make_settings(staff=[{"id": "alice", "role": "admin", "token_sha256": digest}]),
                     store=store)
    client = TestClient(app, base_url=ISSUER, follow_redirects=False, raise_server_exceptions=False)
    yield client, staff_token
    client.close()


def requests_needing_redis(shop: ShopHandle, staff_token: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, url, httpx arguments): each passes every check made without Redis."""
    assert shop.secret
    auth = (shop.client_id, shop.secret)
    _, challenge = pkce_pair()
    params = authorize_params(shop, challenge)
    query = "&".join(f"{k}={v}" for k, v in params.items()).replace(" ", "%20")
    session = {"cookie": f"{SESSION_COOKIE}={secrets.token_urlsafe(32)}"}
    return [
        ("POST", "/token", {"auth": auth, "data": {"grant_type": "authorization_code", "code": "c" * 43,
                                                   "redirect_uri": shop.redirect_uri,
                                                   "code_verifier": "v" * 50}}),
        ("POST", "/token", {"auth": auth, "data": {"grant_type": "refresh_token",
                                                   "refresh_token": "r" * 43}}),
        ("GET", "/userinfo", {"headers": {"authorization": f"Bearer {'a' * 43}"}}),
        ("POST", "/userinfo", {"data": {"access_token": "a" * 43}}),
        ("POST", "/introspect", {"auth": auth, "data": {"token": "a" * 43}}),
        ("POST", "/revoke", {"auth": auth, "data": {"token": "a" * 43}}),
        ("GET", f"/authorize?{query}", {"headers": {"accept": "text/html"}}),
        ("GET", f"/authorize?{query}", {"headers": session}),
        ("GET", "/authorize/continue?request=abc", {"headers": session}),
        ("GET", "/login?request=abc", {}),
        ("GET", "/account", {"headers": session}),
        ("GET", "/account?lang=en", {"headers": session}),
        ("GET", "/audit/api/events", {"headers": {"authorization": f"Bearer {staff_token}"}}),
        ("GET", "/audit/api/checkpoint", {"headers": {"authorization": f"Bearer {staff_token}"}}),
        ("GET", "/audit", {"headers": {"cookie": f"{STAFF_COOKIE}={'s' * 43}"}}),
        ("GET", "/healthz/ready", {}),
        ("GET", "/healthz", {}),
    ]


def check_unavailable(response: Any, path: str) -> None:
    where = f"{path}: {response.status_code} {response.text[:200]}"
    assert response.status_code == 503, where
    assert len(response.headers.get("x-request-id", "")) == 16, where
    assert int(response.headers["retry-after"]) > 0, where
    assert response.headers.get("cache-control") == "no-store", where
    if is_page(path.split("?")[0]):
        assert response.headers["content-type"].startswith("text/html"), where
        assert "temporarily_unavailable" in response.text and "<html" in response.text, where
        assert "content-security-policy" in response.headers, where
    elif path.startswith("/healthz"):
        assert response.json()["status"] == "unavailable" and response.json()["redis"] is False
    else:
        body = response.json()
        assert body["error"] == "temporarily_unavailable" and body["error_description"], where


def test_every_route_answers_503_while_redis_is_unreachable(
        gateway_client: tuple[TestClient, str], shop: ShopHandle, outage: Outage) -> None:
    client, staff_token = gateway_client
    calls = requests_needing_redis(shop, staff_token)
    outage.begin()
    for method, url, kwargs in calls:
        check_unavailable(client.request(method, url, **kwargs), url)
    live = client.get("/healthz/live")
    assert live.status_code == 200 and live.json() == {"status": "ok"} and live.headers["x-request-id"]
    # Routes that need no Redis keep working: discovery, JWKS, published policies.
    for url in ("/.well-known/openid-configuration", "/jwks", f"/policies/{shop.client_id}"):
        assert client.get(url).status_code == 200, url
    outage.end()
    ready = client.get("/healthz/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "redis": True}
    assert client.get("/healthz").status_code == 200


def test_the_error_page_speaks_the_persons_language(
        gateway_client: tuple[TestClient, str], outage: Outage) -> None:
    client, _ = gateway_client
    outage.begin()
    english = client.get("/login?request=abc", headers={"accept-language": "en"})
    chinese = client.get("/login?request=abc", headers={"accept-language": "zh-CN"})
    assert "briefly unavailable" in english.text
    assert "服务暂时不可用" in chinese.text


@pytest.mark.parametrize("error", [redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                                   redis.ReadOnlyError, redis.ResponseError])
def test_every_kind_of_redis_error_is_503(gateway_client: tuple[TestClient, str], shop: ShopHandle,
                                         store: Store, monkeypatch: pytest.MonkeyPatch,
                                         error: type[redis.RedisError]) -> None:
    """Loading after a restart, read-only after a failover, a timeout while paused: all one
    answer. (The token request raises it inside authlib's hooks, in a worker thread.)"""
    client, staff_token = gateway_client

    def fail(*_: Any, **__: Any) -> Any:
        raise error("injected")

    monkeypatch.setattr(store.redis.connection_pool, "get_connection", fail)
    for method, url, kwargs in requests_needing_redis(shop, staff_token):
        check_unavailable(client.request(method, url, **kwargs), url)


def test_an_unexpected_error_is_500_with_a_request_id(gateway_client: tuple[TestClient, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = gateway_client
    gateway = client.app.state.gateway  # type: ignore[attr-defined]

    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.provider.sessions, "find", broken)
    response = client.get("/account", headers={"cookie": f"{SESSION_COOKIE}=x"})
    assert response.status_code == 500 and response.json() == {"error": "server_error"}
    assert len(response.headers["x-request-id"]) == 16
    assert "content-security-policy" in response.headers


def test_readiness_takes_more_checks(gateway_client: tuple[TestClient, str]) -> None:
    client, _ = gateway_client
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    assert client.get("/healthz/ready").status_code == 200
    gateway.readiness.append(lambda: "audit continuity broken")
    failing = client.get("/healthz/ready")
    assert failing.status_code == 503 and failing.json()["failing"] == ["audit continuity broken"]
    assert failing.json()["redis"] is True and failing.headers["retry-after"]
    gateway.readiness[-1] = lambda: 1 / 0
    assert "ZeroDivisionError" in client.get("/healthz/ready").json()["failing"][0]
    assert client.get("/healthz/live").status_code == 200


def test_readiness_answers_in_time_while_redis_hangs(gateway_client: tuple[TestClient, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from gateway import app as app_module

    client, _ = gateway_client
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    release = threading.Event()
    monkeypatch.setattr(app_module, "READY_TIMEOUT_SECONDS", 0.3)
    gateway.readiness.append(lambda: None if release.wait(5) else "hung")
    started = time.monotonic()
    response = client.get("/healthz/ready")
    release.set()
    assert time.monotonic() - started < 2
    assert response.status_code == 503 and response.json()["redis"] is False


def test_page_routes_and_api_routes() -> None:
    for path in ("/authorize", "/authorize/continue", "/login", "/consent", "/logout", "/account",
                 "/account/withdraw", "/upstream/demo/callback", "/demo-idp/authorize", "/audit",
                 "/audit/login"):
        assert is_page(path), path
    for path in ("/token", "/userinfo", "/introspect", "/revoke", "/audit/api/events", "/jwks",
                 "/miniprogram/wx/login", "/healthz/ready", "/.well-known/openid-configuration"):
        assert not is_page(path), path
