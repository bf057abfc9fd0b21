"""The consent centre: what was shared, withdrawal with confirmation, download, erasure."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.testclient import TestClient

from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in


def signed_in_with_token(client: TestClient, shop: ShopHandle) -> tuple[Browser, dict[str, Any]]:
    browser = Browser(client)
    final, _, verifier = sign_in(browser, shop, scope="openid profile email phone", ui_locales="en")
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    return browser, token


def userinfo(client: TestClient, token: dict[str, Any]) -> Any:
    return client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})


def test_account_without_session_signs_in_then_comes_back(client: TestClient, shop: ShopHandle) -> None:
    browser = Browser(client)
    page = browser.follow("/account")
    start = re.search(r'href="(/upstream/demo/start\?[^"]+)"', page.text)
    assert start
    page = browser.follow(start.group(1).replace("&amp;", "&"))
    page = browser.submit(page, person="li-lei")
    assert page.status_code == 200 and str(page.url).endswith("/account")


def test_account_lists_each_shop_with_purposes_fields_and_dates(client: TestClient, shop: ShopHandle) -> None:
    browser, _ = signed_in_with_token(client, shop)
    page = browser.follow("/account")
    assert "Shop shop-a" in page.text
    assert "your phone number, partly hidden (like 138****5678)" in page.text
    assert "expires" in page.text and "Policy version 1" in page.text


def test_withdraw_needs_confirmation_then_revokes_the_shops_tokens(client: TestClient,
                                                                   shop: ShopHandle) -> None:
    browser, token = signed_in_with_token(client, shop)
    assert userinfo(client, token).json()["phone_number"] == "138****5678"
    page = browser.follow("/account")
    forms = re.findall(r'<form method="post" action="/account/withdraw".*?</form>', page.text, re.S)
    phone_form = next(f for f in forms if 'value="phone"' in f)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', phone_form))
    body = "&".join(f"{k}={v}" for k, v in fields.items())
    confirm = browser.request("POST", "/account/withdraw", content=body,
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert confirm.status_code == 200 and "Withdraw consent?" in confirm.text
    assert userinfo(client, token).status_code == 200  # nothing happened yet
    done = browser.submit(confirm, confirm="yes")
    assert done.status_code == 200 and str(done.url).endswith("/account")
    assert userinfo(client, token).status_code == 401  # the shop's tokens are gone
    assert "138****5678" not in done.text.split("Who accessed what")[0]  # no longer granted


def test_withdraw_rejects_missing_or_wrong_csrf(client: TestClient, shop: ShopHandle) -> None:
    browser, token = signed_in_with_token(client, shop)
    for body in (f"shop={shop.client_id}&confirm=yes", f"shop={shop.client_id}&confirm=yes&csrf=x"):
        reply = browser.request("POST", "/account/withdraw", content=body,
                                headers={"content-type": "application/x-www-form-urlencoded"})
        assert reply.status_code == 403
    assert userinfo(client, token).status_code == 200


def test_download_my_data_contains_profile_and_consents(client: TestClient, shop: ShopHandle) -> None:
    browser, _ = signed_in_with_token(client, shop)
    reply = browser.request("GET", "/account/export")
    assert reply.headers["content-disposition"].startswith("attachment")
    data = json.loads(reply.text)
    assert data["profile"]["email"] == "lilei@example.com"
    (consent,) = data["consents"]
    assert consent["shop"]["client_id"] == shop.client_id
    assert {g["field"] for g in consent["grants"]} >= {"nickname", "phone"}
    assert consent["receipts"]
    actions = [event["action"] for event in data["history"]]
    assert {"sign_in", "consent_granted", "token_issued"} <= set(actions)


def test_erase_needs_confirmation_then_ends_everything(client: TestClient, shop: ShopHandle) -> None:
    browser, token = signed_in_with_token(client, shop)
    page = browser.follow("/account")
    erase_form = re.search(r'<form method="post" action="/account/erase">.*?</form>', page.text, re.S)
    assert erase_form
    csrf = re.search(r'name="csrf" value="([^"]+)"', erase_form.group(0))
    assert csrf
    confirm = browser.request("POST", "/account/erase", content=f"csrf={csrf.group(1)}",
                              headers={"content-type": "application/x-www-form-urlencoded"})
    assert "Erase your account?" in confirm.text
    done = browser.submit(confirm, confirm="yes")
    assert done.status_code == 200
    assert userinfo(client, token).status_code == 401
    assert "__Host-cg_session" not in browser.cookies


def test_access_history_in_plain_words_with_verifiable_proofs(client: TestClient, shop: ShopHandle) -> None:
    from gateway.audit import NoteVerifier, verify_proof

    browser, token = signed_in_with_token(client, shop)
    userinfo(client, token)
    page = browser.follow("/account")
    history = page.text.split("Who accessed what")[1]
    read = next(line for line in history.split("<li>") if "Shop shop-a read " in line)
    assert "your phone number, partly hidden (like 138****5678)" in read
    assert "for Account, Delivery contact" in read
    proof_links = re.findall(r'href="(/account/proof/\d+)"', page.text)
    assert proof_links
    text = browser.request("GET", proof_links[0]).text
    checkpoint = browser.request("GET", "/account/checkpoint").text
    key = checkpoint.split("verifier key: ")[1].strip()
    _, event = verify_proof(text, [NoteVerifier.from_string(key)], key.split("+")[0])
    assert event.person is not None


def test_proofs_of_other_peoples_events_are_refused(client: TestClient, shop: ShopHandle) -> None:
    first, _ = signed_in_with_token(client, shop)
    page = first.follow("/account")
    theirs = re.findall(r'href="(/account/proof/\d+)"', page.text)[0]
    other = Browser(client)
    sign_in(other, shop, person="han-meimei")
    assert other.request("GET", theirs).status_code == 404


def test_erasure_with_an_old_sign_in_asks_to_sign_in_again(client: TestClient, shop: ShopHandle,
                                                           monkeypatch: Any) -> None:
    """Issue 14: a session left open (a shared phone) was enough to erase the account."""
    import time as clock

    from gateway.web import account

    browser, token = signed_in_with_token(client, shop)
    page = browser.follow("/account")
    erase_form = re.search(r'<form method="post" action="/account/erase">.*?</form>', page.text, re.S)
    assert erase_form
    csrf = re.search(r'name="csrf" value="([^"]+)"', erase_form.group(0))
    assert csrf
    later = clock.time() + account.ERASE_REAUTH_SECONDS + 1
    monkeypatch.setattr(account.time, "time", lambda: later)
    reply = browser.request("POST", "/account/erase", content=f"csrf={csrf.group(1)}&confirm=yes",
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 302 and reply.headers["location"].startswith("/login?request=")
    assert userinfo(client, token).status_code == 200  # nothing was erased
