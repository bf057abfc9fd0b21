"""Linking a second provider to a person: explicit, CSRF-protected, after a recent sign-in."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import respx
from starlette.testclient import TestClient

from gateway.upstream import IdentityService, UpstreamIdentity
from gateway.web import linking
from tests.conftest import Browser, ShopHandle, query_of, sign_in
from tests.upstream.conftest import begin, consent_and_tokens, userinfo
from tests.upstream.test_oauth2_github import mock_github


@pytest.fixture
def gateway(upstream_client: Callable[..., TestClient], write_secret: Callable[..., dict[str, str]],
            shop: ShopHandle) -> TestClient:
    return upstream_client([{
        "kind": "oauth2", "preset": "github", "id": "github", "name": "GitHub",
        "client_id": "Iv1.gateway", "client_secret": write_secret("github.secret", "gh-secret"),
    }])


def _demo_subject(client: TestClient, shop: ShopHandle, browser: Browser) -> str:
    final, _, verifier = sign_in(browser, shop)
    code = query_of(final.headers["location"])["code"]
    tokens = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": shop.redirect_uri, "code_verifier": verifier},
                         auth=(shop.client_id, shop.secret)).json()  # type: ignore[arg-type]
    return str(userinfo(client, tokens)["sub"])


def _link(browser: Browser, provider: str = "github") -> Any:
    page = browser.follow("/upstream/link")
    assert page.status_code == 200, page.text
    csrf = re.search(rf'action="/upstream/{provider}/link">\s*<input type="hidden" name="csrf" '
                     r'value="([^"]+)"', page.text)
    assert csrf, page.text
    return browser.request("POST", f"/upstream/{provider}/link", content=f"csrf={csrf.group(1)}",
                           headers={"content-type": "application/x-www-form-urlencoded"})


def test_linked_provider_signs_in_to_the_same_person(gateway: TestClient, shop: ShopHandle) -> None:
    browser = Browser(gateway)  # type: ignore[arg-type]
    demo_sub = _demo_subject(gateway, shop, browser)
    with respx.mock as mock:
        mock_github(mock)
        started = _link(browser)
        assert started.status_code == 302
        state = query_of(started.headers["location"])["state"]
        page = browser.follow(f"/upstream/github/callback?code=gh-code&state={state}")
        assert page.status_code == 200 and ("Linked" in page.text or "已关联" in page.text)
        from gateway.audit import AuditFilter

        audit = gateway.app.state.gateway.provider.audit  # type: ignore[attr-defined]
        (event,) = [i.event for i in audit.query.page(AuditFilter(action="identity_linked")).items]
        assert event.outcome == "success" and event.actor_type == "person"
        # Later, in another browser, the person signs in with GitHub only.
        later = begin(gateway, shop, "github")
        github_sub = userinfo(gateway, consent_and_tokens(
            gateway, later, later.callback(code="gh-code-2", state=later.state)))["sub"]
    assert github_sub == demo_sub


def test_account_of_someone_else_is_not_linked(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock_github(mock)
        owner = begin(gateway, shop, "github")  # the GitHub account already has its person
        consent_and_tokens(gateway, owner, owner.callback(code="c1", state=owner.state))
        browser = Browser(gateway)  # type: ignore[arg-type]
        _demo_subject(gateway, shop, browser)
        started = _link(browser)
        state = query_of(started.headers["location"])["state"]
        page = browser.follow(f"/upstream/github/callback?code=c2&state={state}")
    assert page.status_code == 409


def test_link_without_the_form_token_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    browser = Browser(gateway)  # type: ignore[arg-type]
    _demo_subject(gateway, shop, browser)
    reply = browser.request("POST", "/upstream/github/link", content="csrf=forged",
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 403


def test_link_needs_a_recent_sign_in(gateway: TestClient, shop: ShopHandle,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    browser = Browser(gateway)  # type: ignore[arg-type]
    _demo_subject(gateway, shop, browser)
    monkeypatch.setattr(linking, "LINK_MAX_AGE", -1)  # every sign-in is now too old
    reply = _link(browser)
    assert reply.status_code == 302 and reply.headers["location"].startswith("/login?request=")


def test_link_page_without_a_session_asks_to_sign_in(gateway: TestClient) -> None:
    reply = Browser(gateway).request("GET", "/upstream/link")  # type: ignore[arg-type]
    assert reply.status_code == 302 and reply.headers["location"].startswith("/login?request=")


def test_link_of_an_identity_already_linked_to_the_same_person_is_idempotent(
    gateway: TestClient,
) -> None:
    identities: IdentityService = gateway.app.state.gateway.provider.identities  # type: ignore[attr-defined]
    first = UpstreamIdentity("github", "https://api.github.com\x001")
    person = identities.resolve(first)
    assert identities.link(person, first) is True
    assert identities.link("someone-else", first) is False
