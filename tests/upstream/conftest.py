"""Fixtures for the upstream connectors: a gateway with providers configured, and a person
walking shop → gateway → provider → gateway → shop, with the provider imitated by respx.

The gateway's own pages are requested through the test client (httpx2); the gateway's
calls to providers go through classic httpx, which respx intercepts, so every provider
answer in these tests is the one the test wrote.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.store import Store
from tests.conftest import (
    ISSUER,
    Browser,
    ShopHandle,
    authorize_params,
    checkboxes,
    exchange_code,
    pkce_pair,
    query_of,
)


@pytest.fixture
def write_secret(keys_dir: Path) -> Callable[[str, str], dict[str, str]]:
    """Write a provider secret into keys/ and return the settings reference to it."""
    def write(name: str, value: str) -> dict[str, str]:
        (keys_dir / name).write_text(value, encoding="utf-8")
        return {"file": name}

    return write


@pytest.fixture
def upstream_client(make_settings: Callable[..., Settings],
                    store: Store) -> Iterator[Callable[..., TestClient]]:
    """A gateway (test client) with the given providers.

    Upstream failures that are the provider's (timeouts, 5xx) are answered with 502 on
    purpose, so the suite-wide "no 5xx" check is narrowed here to what would be a bug:
    no request may end in a 500.
    """
    clients: list[TestClient] = []

    def make(providers: list[dict[str, Any]], **overrides: Any) -> TestClient:
        values: dict[str, Any] = {"providers": providers, "upstream_retries": 0}
        values.update(overrides)
        app = create_app(make_settings(**values), store=store)
        client = TestClient(app, base_url=ISSUER, follow_redirects=False,
                            raise_server_exceptions=False)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    for client in clients:
        registry = client.app.state.gateway.metrics.registry  # type: ignore[attr-defined]
        errors = [s for m in registry.collect() for s in m.samples
                  if s.name.endswith("_total") and s.labels.get("status") == "500" and s.value]
        assert not errors, f"server errors during the test: {errors}"


@dataclass
class SignIn:
    """One person's sign-in at a shop, parked at the provider's authorization page."""

    browser: Browser
    shop: ShopHandle
    params: dict[str, str]
    verifier: str
    provider_id: str
    location: str  # where the gateway sent the browser: the provider's authorize URL

    @property
    def upstream_query(self) -> dict[str, str]:
        return query_of(self.location)

    @property
    def state(self) -> str:
        return self.upstream_query["state"]

    def callback(self, **query: str) -> httpx2.Response:
        """The provider redirects back; follow the gateway's redirects from there."""
        return self.browser.follow(f"/upstream/{self.provider_id}/callback?{urlencode(query)}")


def begin(client: TestClient, shop: ShopHandle, provider_id: str, browser: Browser | None = None,
          **extra: str) -> SignIn:
    """Shop → /authorize → provider chooser → /upstream/<id>/start; stops at the provider.
    (The browser's User-Agent is the client's: set ``client.headers`` to play WeChat.)"""
    browser = browser or Browser(client)  # type: ignore[arg-type]
    verifier, challenge = pkce_pair()
    params = authorize_params(shop, challenge, **extra)
    page = browser.follow(f"/authorize?{urlencode(params)}")
    start = re.search(rf'href="(/upstream/{provider_id}/start\?[^"]+)"', page.text)
    assert start, page.text
    response = browser.request("GET", html.unescape(start.group(1)))
    assert response.status_code == 302, response.text
    return SignIn(browser, shop, params, verifier, provider_id, response.headers["location"])


def consent_and_tokens(client: TestClient, sign_in: SignIn, page: httpx2.Response) -> dict[str, Any]:
    """Tick everything on the consent screen (if shown) and redeem the shop's code."""
    if page.status_code == 200 and 'action="/consent"' in page.text:
        page = sign_in.browser.submit(page, checkboxes(page), decision="allow")
    assert page.status_code == 302, page.text
    answer = query_of(page.headers["location"])
    assert answer.get("state") == sign_in.params["state"]
    assert "code" in answer, answer
    tokens = exchange_code(client, sign_in.shop, answer["code"], sign_in.verifier)  # type: ignore[arg-type]
    assert tokens.status_code == 200, tokens.text
    return dict(tokens.json())


def userinfo(client: TestClient, tokens: dict[str, Any]) -> dict[str, Any]:
    reply = client.get("/userinfo", headers={"authorization": f"Bearer {tokens['access_token']}"})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def shop_error(page: httpx2.Response) -> str | None:
    """The error the shop is sent after a failed upstream sign-in (from the page's link back
    to the shop), or None when the page offers no way back."""
    link = re.search(r'<a class="button" href="([^"]+)"', page.text)
    if link is None:
        return None
    return query_of(html.unescape(link.group(1))).get("error")


def released(claims: dict[str, Any]) -> set[str]:
    """Userinfo members other than ``sub``."""
    return set(claims) - {"sub"}
