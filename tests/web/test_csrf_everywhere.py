"""Every form the gateway serves rejects a missing or a wrong CSRF token, even from a
signed-in person or staff member, and changes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from gateway.audit.staff import new_staff_token
from tests.conftest import Browser, ShopHandle, sign_in

FORMS = [
    ("/consent", "decision=allow&request=x"),
    ("/logout", "confirm=yes"),
    ("/account/withdraw", "shop=shop-a&confirm=yes"),
    ("/account/erase", "confirm=yes"),
    ("/demo-idp/authorize", "person=li-lei&redirect_uri=x"),
    ("/upstream/demo/link", ""),
    ("/audit/login", "token=x"),
    ("/audit/logout", ""),
    ("/audit/verify", ""),
]


@pytest.fixture
def signed_in(shop: ShopHandle, make_client: Callable[..., TestClient]) -> tuple[Browser, str]:
    token, digest = new_staff_token()
    client = make_client(staff=[{"id": "bob", "role": "admin", "token_sha256": digest}])
    browser = Browser(client)
    sign_in(browser, shop)
    page = browser.follow("/audit")
    browser.submit(page, token=token)  # a staff session in the same browser, too
    assert "__Host-cg_staff" in browser.cookies
    return browser, token


@pytest.mark.parametrize(("path", "body"), FORMS)
# "%C3%A9": a non-ASCII token once reached hmac.compare_digest as str, a 500 (schemathesis).
@pytest.mark.parametrize("csrf", [None, "forged", "", "%C3%A9t%C3%A9"])
def test_form_without_a_valid_csrf_token_is_refused(signed_in: tuple[Browser, str], path: str,
                                                    body: str, csrf: str | None) -> None:
    browser, _ = signed_in
    content = body if csrf is None else f"{body}&csrf={csrf}".lstrip("&")
    reply = browser.request("POST", path, content=content,
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 403, (path, reply.status_code)
    assert "__Host-cg_session" in browser.cookies  # nothing was ended
    page = browser.follow("/account")
    assert re.search(r"Shop shop-a|shop-a", page.text)  # consents still there


def test_staff_api_post_needs_the_bearer_token_not_the_console_cookie(
    signed_in: tuple[Browser, str]
) -> None:
    browser, token = signed_in
    assert browser.request("POST", "/audit/api/verify").status_code == 401
    ok = browser.request("POST", "/audit/api/verify", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200


def test_staff_api_query_with_a_non_ascii_csrf_token_is_refused_not_a_server_error(
    signed_in: tuple[Browser, str]
) -> None:
    browser, _ = signed_in
    for csrf in ("%C3%A9t%C3%A9", "%FF", "forged"):
        reply = browser.request("GET", f"/audit/api/events?csrf={csrf}")
        assert reply.status_code == 401, (csrf, reply.status_code)
        assert reply.json() == {"error": "invalid_token"}
