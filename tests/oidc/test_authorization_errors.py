"""Malformed or hostile authorization requests: error page or error redirect, never a 500."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from tests.conftest import ISSUER, Browser, ShopHandle, authorize_params, pkce_pair, query_of


def authorize(client: TestClient, params: dict[str, str]) -> tuple[int, str]:
    reply = client.get(f"/authorize?{urlencode(params)}")
    return reply.status_code, reply.headers.get("location", "")


def test_unknown_client_gets_an_error_page_not_a_redirect(client: TestClient, shop: ShopHandle) -> None:
    params = authorize_params(shop, pkce_pair()[1], client_id="nobody")
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 400
    assert "location" not in reply.headers
    assert "invalid_client" in reply.text
    assert reply.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("redirect_uri", [
    "https://evil.example/callback",
    "https://shop.example/callback/extra",      # prefix of a registered one
    "https://shop.example/call",                # registered one is a prefix of it
    "https://SHOP.example/callback",            # case variant
    "https://shop.example/Callback",
    "https://shop.example/callback?x=1",
    "https://shop.example/callback#frag",
    'https://shop.example/"quoted"',
])
def test_unregistered_redirect_uri_gets_an_error_page(
    client: TestClient, shop: ShopHandle, redirect_uri: str
) -> None:
    params = authorize_params(shop, pkce_pair()[1], redirect_uri=redirect_uri)
    status, location = authorize(client, params)
    assert status == 400
    assert location == ""


def test_missing_redirect_uri_gets_an_error_page(client: TestClient, shop: ShopHandle) -> None:
    params = authorize_params(shop, pkce_pair()[1])
    del params["redirect_uri"]
    status, location = authorize(client, params)
    assert (status, location) == (400, "")


@pytest.mark.parametrize("change", [
    {"code_challenge": ""},                                  # PKCE missing
    {"code_challenge_method": "plain"},                      # plain refused
    {"code_challenge_method": ""},                           # method must be explicit S256
    {"code_challenge": "short"},                             # malformed challenge
    {"response_type": "token"},                              # implicit refused
    {"response_type": "code id_token"},
    {"scope": "profile"},                                    # not an OpenID request
    {"prompt": "none login"},
])
def test_invalid_request_with_valid_redirect_is_sent_back_to_the_shop(
    client: TestClient, shop: ShopHandle, change: dict[str, str]
) -> None:
    params = authorize_params(shop, pkce_pair()[1], **change)
    params = {k: v for k, v in params.items() if v != ""}
    status, location = authorize(client, params)
    assert status == 302
    assert location.startswith(shop.redirect_uri)
    query = query_of(location)
    assert query["error"] in ("invalid_request", "unsupported_response_type", "invalid_scope")
    assert query["state"] == params["state"]
    assert query["iss"] == ISSUER


def test_duplicate_parameters_are_refused(client: TestClient, shop: ShopHandle) -> None:
    params = [*authorize_params(shop, pkce_pair()[1]).items(), ("state", "second")]
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code in (302, 400)
    if reply.status_code == 302:
        assert query_of(reply.headers["location"])["error"] == "invalid_request"


def test_prompt_none_without_session_returns_login_required(client: TestClient, shop: ShopHandle) -> None:
    params = authorize_params(shop, pkce_pair()[1], prompt="none")
    status, location = authorize(client, params)
    assert status == 302
    assert query_of(location)["error"] == "login_required"


def test_prompt_none_without_consent_returns_consent_required(
    client: TestClient, make_shop: object, shop: ShopHandle
) -> None:
    from tests.conftest import sign_in

    browser = Browser(client)
    sign_in(browser, shop)  # signs in and consents to shop-a's scopes
    params = authorize_params(shop, pkce_pair()[1], prompt="none", scope="openid phone")
    reply = browser.request("GET", f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    assert query_of(reply.headers["location"])["error"] == "consent_required"


def test_prompt_login_asks_to_sign_in_again(client: TestClient, shop: ShopHandle) -> None:
    from tests.conftest import sign_in

    browser = Browser(client)
    sign_in(browser, shop)
    params = authorize_params(shop, pkce_pair()[1], prompt="login")
    reply = browser.follow(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 200
    assert "/upstream/demo/start" in reply.text


def test_prompt_consent_shows_the_consent_screen_again(client: TestClient, shop: ShopHandle) -> None:
    from tests.conftest import sign_in

    browser = Browser(client)
    sign_in(browser, shop)
    final, _, _ = sign_in(browser, shop, prompt="consent")
    assert "code" in query_of(final.headers["location"])
    consent_pages = [p for p in browser.pages if p.request.method == "GET" and p.url.path == "/consent"]
    assert len(consent_pages) == 2


def test_non_utf8_query_gets_an_error_page(client: TestClient, shop: ShopHandle) -> None:
    reply = client.get("/authorize?client_id=%ff%fe&response_type=code")
    assert reply.status_code == 400
    assert "location" not in reply.headers


def test_pending_request_cannot_be_finished_in_another_browser(
    client: TestClient, shop: ShopHandle
) -> None:
    first = Browser(client)
    params = authorize_params(shop, pkce_pair()[1])
    login = first.follow(f"/authorize?{urlencode(params)}")
    login_url = str(login.url)
    thief = Browser(client)
    reply = thief.follow(login_url)
    assert reply.status_code == 400
    assert "expired" in reply.text


def test_forged_upstream_callback_is_refused(client: TestClient, shop: ShopHandle) -> None:
    reply = Browser(client).follow("/upstream/demo/callback?code=abc&state=forged")
    assert reply.status_code == 400
    assert "location" not in reply.headers
