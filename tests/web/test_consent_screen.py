"""The consent screen over HTTP: choices, re-consent, withdrawal, expiry and receipts."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any
from urllib.parse import urlencode

import yaml
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from gateway.consent import ConsentRecord, receipt_digest
from gateway.store import Store
from tests.conftest import (
    DEFAULT_POLICY,
    ISSUER,
    Browser,
    ShopHandle,
    authorize_params,
    exchange_code,
    pkce_pair,
    query_of,
    sign_in,
)


def reach_consent(browser: Browser, shop: ShopHandle, **extra: str) -> tuple[Any, str]:
    """Sign in up to the consent screen; returns the page and the PKCE verifier."""
    verifier, challenge = pkce_pair()
    params = authorize_params(shop, challenge, **{"scope": "openid profile email phone", **extra})
    page = browser.follow(f"/authorize?{urlencode(params)}")
    if "/upstream/demo/start" in page.text:
        start = re.search(r'href="(/upstream/demo/start\?[^"]+)"', page.text)
        assert start
        page = browser.follow(start.group(1).replace("&amp;", "&"))
        page = browser.submit(page, person="li-lei")
    return page, verifier


def userinfo_after(client: TestClient, shop: ShopHandle, final: Any, verifier: str) -> dict[str, Any]:
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    reply = client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert reply.status_code == 200
    return dict(reply.json()) | {"_access_token": token["access_token"]}


def test_screen_names_the_shop_purposes_transforms_and_ticks_nothing(client: TestClient,
                                                                    shop: ShopHandle) -> None:
    page, _ = reach_consent(Browser(client), shop, ui_locales="en")
    text = page.text
    assert "Shop shop-a" in text
    assert "To create your account." in text and "So the courier can call you." in text
    assert "your phone number, partly hidden (like 138****5678)" in text
    assert "only your age range" in text
    assert "365 days" in text and "necessary for a contract with you" in text
    assert "checked" not in text
    assert 'name="purpose" value="account"' in text
    assert 'name="purpose" value="delivery_contact"' not in text  # sensitive: own tick only
    assert 'name="field" value="delivery_contact:phone"' in text


def test_screen_speaks_chinese(client: TestClient, shop: ShopHandle) -> None:
    page, _ = reach_consent(Browser(client), shop, ui_locales="zh-CN")
    assert "您的手机号码（部分隐藏，如 138****5678）" in page.text and "同意所勾选的内容" in page.text


def test_required_fields_are_one_decision_and_optional_ones_are_not_included(
    client: TestClient, shop: ShopHandle
) -> None:
    browser = Browser(client)
    page, verifier = reach_consent(browser, shop)
    final = browser.submit(page, [("purpose", "account")], decision="allow")
    info = userinfo_after(client, shop, final, verifier)
    assert info["nickname"] == "李雷"
    assert "email" not in info and "picture" not in info and "phone_number" not in info


def test_optional_and_sensitive_fields_are_separate_ticks(client: TestClient, shop: ShopHandle) -> None:
    browser = Browser(client)
    page, verifier = reach_consent(browser, shop)
    ticks = [("purpose", "account"), ("field", "account:email"), ("field", "delivery_contact:phone")]
    final = browser.submit(page, ticks, decision="allow")
    info = userinfo_after(client, shop, final, verifier)
    assert info["email"] == "lilei@example.com"
    assert info["phone_number"] == "138****5678"
    assert "picture" not in info and "age_band" not in info


def test_shop_never_receives_a_field_its_policy_does_not_name(make_shop: Any, make_client: Any) -> None:
    policy = {**DEFAULT_POLICY, "fields": [f for f in DEFAULT_POLICY["fields"] if f["field"] != "phone"]}
    shop = make_shop("shop-narrow", policy=policy)
    client = make_client()
    claims = json.dumps({"userinfo": {"phone_number": {"essential": True}, "id_number": None}})
    final, _, verifier = sign_in(Browser(client), shop, scope="openid profile email phone",
                                 claims=claims)
    info = userinfo_after(client, shop, final, verifier)
    assert "phone_number" not in info and "id_number" not in info and "id_number_pseudonym" not in info


def test_claims_parameter_requests_fields_no_scope_covers(make_shop: Any, make_client: Any) -> None:
    policy = {**DEFAULT_POLICY, "purposes": [*DEFAULT_POLICY["purposes"], {
        "id": "invoice", "name": {"zh-CN": "发票", "en": "Invoice"},
        "description": {"zh-CN": "开发票。", "en": "Invoices."}, "retention_days": 30}],
        "fields": [*DEFAULT_POLICY["fields"],
                   {"field": "id_number", "purpose": "invoice", "transform": "pseudonymise"}]}
    shop = make_shop("shop-claims", policy=policy)
    client = make_client()
    final, _, verifier = sign_in(Browser(client), shop, scope="openid",
                                 claims=json.dumps({"userinfo": {"id_number": None}}))
    info = userinfo_after(client, shop, final, verifier)
    assert set(info) - {"_access_token"} == {"sub", "id_number_pseudonym"}


def test_malformed_claims_parameter_is_invalid_request(client: TestClient, shop: ShopHandle) -> None:
    params = authorize_params(shop, pkce_pair()[1], claims="{not json")
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    assert query_of(reply.headers["location"])["error"] == "invalid_request"


def test_withdrawing_one_field_ends_the_token_and_the_next_sign_in_lacks_it(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    browser = Browser(client)
    final, _, verifier = sign_in(browser, shop)
    info = userinfo_after(client, shop, final, verifier)
    assert info["email"] == "lilei@example.com"
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    person_id = next(k.decode().split("{p:")[1].split("}")[0]
                     for k in store.redis.scan_iter(match=f"{store.keys.prefix}*consent:{shop.client_id}"))
    gateway.provider.consents.withdraw(person_id, shop.client_id, "account", "email")
    # A narrowing ends the grant's generation: the token issued before it no longer works.
    again = client.get("/userinfo", headers={"Authorization": f"Bearer {info['_access_token']}"})
    assert again.status_code == 401
    final, _, verifier = sign_in(browser, shop)  # the withdrawn field is not asked again
    info = userinfo_after(client, shop, final, verifier)
    assert "email" not in info and info["nickname"] == "李雷"


def test_withdrawn_fields_are_not_asked_again_silently(client: TestClient, shop: ShopHandle,
                                                       store: Store) -> None:
    browser = Browser(client)
    sign_in(browser, shop)
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    person_id = next(k.decode().split("{p:")[1].split("}")[0]
                     for k in store.redis.scan_iter(match=f"{store.keys.prefix}*consent:{shop.client_id}"))
    gateway.provider.consents.withdraw(person_id, shop.client_id, "account", "email")
    final, _, verifier = sign_in(browser, shop)
    assert final.status_code == 302  # no consent screen on an ordinary sign-in
    assert "email" not in userinfo_after(client, shop, final, verifier)
    page, _ = reach_consent(browser, shop, prompt="consent")
    assert 'value="account:email"' in page.text and "checked" not in page.text


def test_new_policy_version_asks_only_for_what_is_new(client: TestClient, shop: ShopHandle,
                                                      make_client: Any, policies_dir: Any) -> None:
    browser = Browser(client)
    sign_in(browser, shop)
    path = policies_dir / "shops" / f"{shop.client_id}.yaml"
    config = yaml.safe_load(path.read_text())
    config["policy"]["version"] = 2
    config["policy"]["fields"].append({"field": "gender", "purpose": "account", "transform": "pass"})
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    browser.client = make_client()
    page, verifier = reach_consent(browser, shop, ui_locales="en")
    assert 'value="account:gender"' in page.text
    assert 'value="account:email"' not in page.text and 'name="purpose"' not in page.text
    final = browser.submit(page, [("field", "account:gender")], decision="allow")
    info = userinfo_after(browser.client, shop, final, verifier)
    assert info["gender"] == "male" and info["email"] == "lilei@example.com"


def test_expired_consent_asks_again(client: TestClient, shop: ShopHandle, store: Store) -> None:
    browser = Browser(client)
    sign_in(browser, shop)
    key = next(store.redis.scan_iter(match=f"{store.keys.prefix}*consent:{shop.client_id}"))
    record = ConsentRecord.from_stored(store.redis.get(key))  # type: ignore[arg-type]
    record.grants = [dataclasses.replace(g, expires_at=int(time.time()) - 1) for g in record.grants]
    store.redis.set(key, record.to_stored())
    page, _ = reach_consent(browser, shop)
    assert 'action="/consent"' in page.text


def test_each_grant_gets_a_signed_consent_receipt_without_values(client: TestClient,
                                                                  shop: ShopHandle, store: Store) -> None:
    browser = Browser(client)
    sign_in(browser, shop, scope="openid profile email phone")
    key = next(store.redis.scan_iter(match=f"{store.keys.prefix}*consent:{shop.client_id}"))
    record = ConsentRecord.from_stored(store.redis.get(key))  # type: ignore[arg-type]
    (kept,) = record.receipts  # the record keeps the receipt by digest, not the JWT
    (consent,) = json.loads(browser.request("GET", "/account/export").text)["consents"]
    (receipt,) = consent["receipts"]  # signed again on the way out
    keys = KeySet.import_key_set(client.get("/jwks").json())
    claims = jwt.decode(receipt, keys, algorithms=["ES256"]).claims
    assert receipt_digest(claims) == kept.digest and claims["consentReceiptID"] == kept.receipt_id
    assert claims["version"] == "KI-CR-v1.1.0" and claims["iss"] == ISSUER
    assert claims["consentTimestamp"] == kept.timestamp == claims["iat"]
    assert claims["piiControllers"][0]["piiController"] == "Shop shop-a"
    categories = {c for s in claims["services"] for p in s["purposes"] for c in p["piiCategory"]}
    assert categories == {g.field for g in record.grants}
    assert {"nickname", "email", "phone"} <= categories
    assert claims["sensitive"] is True and claims["spiCat"] == ["phone"]
    assert "lilei" not in json.dumps(claims) and "1381234" not in json.dumps(claims)
    assert "lilei" not in record.to_json() and "1381234" not in record.to_json()


def test_receipts_of_a_record_written_before_digests_are_handed_out_as_they_were(
        client: TestClient, shop: ShopHandle, store: Store) -> None:
    browser = Browser(client)
    sign_in(browser, shop, scope="openid profile email phone")
    key = next(store.redis.scan_iter(match=f"{store.keys.prefix}*consent:{shop.client_id}"))
    record = ConsentRecord.from_stored(store.redis.get(key))  # type: ignore[arg-type]
    gateway: Any = client.app.state.gateway  # type: ignore[attr-defined]
    old_receipt = gateway.provider.signing_keys.sign({"iss": ISSUER, "jti": "signed-before"}, "ES256")
    store.redis.set(key, json.dumps({  # the record as the gateway wrote it before format 2
        "client_id": record.client_id, "policy_version": record.policy_version,
        "decided_at": record.decided_at, "method": record.method,
        "grants": [dataclasses.asdict(g) for g in record.grants],
        "refusals": [dataclasses.asdict(r) for r in record.refusals],
        "receipts": [old_receipt], "withdrawn_at": 0.0}))
    (consent,) = json.loads(browser.request("GET", "/account/export").text)["consents"]
    assert consent["receipts"] == [old_receipt]
    assert {g["field"] for g in consent["grants"]} == {g.field for g in record.grants}
