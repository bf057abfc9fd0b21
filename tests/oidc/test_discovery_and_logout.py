"""Discovery metadata, JWKS, RP-initiated logout, health and metrics."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.testclient import TestClient

from tests.conftest import ISSUER, Browser, ShopHandle, exchange_code, query_of, sign_in


def test_discovery_documents_agree_and_advertise_the_security_profile(client: TestClient) -> None:
    oidc = client.get("/.well-known/openid-configuration").json()
    oauth = client.get("/.well-known/oauth-authorization-server").json()
    assert oidc == oauth
    assert oidc["issuer"] == ISSUER
    assert oidc["code_challenge_methods_supported"] == ["S256"]
    assert oidc["response_types_supported"] == ["code"]
    assert oidc["subject_types_supported"] == ["pairwise"]
    assert oidc["authorization_response_iss_parameter_supported"] is True
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                 "revocation_endpoint", "introspection_endpoint", "end_session_endpoint"):
        assert oidc[name].startswith(ISSUER + "/")


def test_jwks_publishes_public_keys_with_kid_only(client: TestClient) -> None:
    keys = client.get("/jwks").json()["keys"]
    assert {k["alg"] for k in keys} >= {"ES256", "RS256"}
    for key in keys:
        assert key["kid"]
        assert "d" not in key and "p" not in key


def test_logout_with_id_token_hint_redirects_to_registered_uri(client: TestClient, shop: ShopHandle) -> None:
    browser = Browser(client)
    final, _, verifier = sign_in(browser, shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    reply = browser.request("GET", "/logout?" + urlencode({
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": "https://shop.example/",
        "state": "bye"}))
    assert reply.status_code == 302
    assert reply.headers["location"] == "https://shop.example/?state=bye"
    assert "__Host-cg_session" not in browser.cookies
    again = browser.follow("/authorize?" + urlencode({
        "response_type": "code", "client_id": shop.client_id, "redirect_uri": shop.redirect_uri,
        "scope": "openid", "prompt": "none", "code_challenge": "a" * 43,
        "code_challenge_method": "S256", "state": "s"}))
    assert query_of(again.headers["location"])["error"] == "login_required"


def test_logout_to_unregistered_uri_does_not_redirect(client: TestClient, shop: ShopHandle) -> None:
    browser = Browser(client)
    final, _, verifier = sign_in(browser, shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    reply = browser.request("GET", "/logout?" + urlencode({
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": "https://evil.example/"}))
    assert reply.status_code == 200
    assert "location" not in reply.headers


def test_logout_without_hint_asks_for_confirmation_with_csrf(client: TestClient, shop: ShopHandle) -> None:
    browser = Browser(client)
    sign_in(browser, shop)
    page = browser.request("GET", "/logout")
    assert page.status_code == 200 and 'name="csrf"' in page.text
    forged = browser.request("POST", "/logout", content="confirm=yes&csrf=forged",
                             headers={"content-type": "application/x-www-form-urlencoded"})
    assert forged.status_code == 403
    assert "__Host-cg_session" in browser.cookies
    done = browser.submit(page, confirm="yes")
    assert done.status_code == 200
    assert "__Host-cg_session" not in browser.cookies


def test_logout_with_forged_hint_is_an_error_page(client: TestClient) -> None:
    reply = client.get("/logout?id_token_hint=eyJhbGciOiJub25lIn0.e30.&post_logout_redirect_uri=x")
    assert reply.status_code == 400
    assert "location" not in reply.headers


def test_consent_form_rejects_missing_or_wrong_csrf(client: TestClient, shop: ShopHandle) -> None:
    browser = Browser(client)
    for body in ("decision=allow&request=x", "decision=allow&request=x&csrf=wrong"):
        reply = browser.request("POST", "/consent", content=body,
                                headers={"content-type": "application/x-www-form-urlencoded"})
        assert reply.status_code == 403


def test_healthz_reports_redis(client: TestClient) -> None:
    reply = client.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "redis": True}


def test_metrics_count_requests_and_need_the_scrapers_token(shop: ShopHandle, make_client: Any) -> None:
    import hashlib

    client = make_client(metrics_token_sha256=hashlib.sha256(b"scraper-token").hexdigest())
    client.get("/jwks")
    assert client.get("/metrics").status_code == 403  # issue 14: metrics were public
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    text = client.get("/metrics", headers={"Authorization": "Bearer scraper-token"}).text
    assert 'gateway_http_requests_total{method="GET",route="/jwks",status="200"}' in text


def test_metrics_without_a_token_are_for_loopback_only(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 403  # the test client is not on loopback


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:
    reply = client.get("/authorize?client_id=nobody")
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    assert reply.headers["x-frame-options"] == "DENY"


def test_pages_switch_language(client: TestClient) -> None:
    zh = client.get("/authorize?client_id=nobody", headers={"accept-language": "zh-CN,zh;q=0.9"})
    en = client.get("/authorize?client_id=nobody&lang=en")
    assert "无法完成此请求" in zh.text
    assert "This request cannot be completed" in en.text


def test_demo_provider_does_not_exist_outside_demo_mode(shop: ShopHandle, make_client: object) -> None:
    client = make_client(demo=False)  # type: ignore[operator]
    assert client.get("/demo-idp/authorize?redirect_uri=x").status_code == 404
    assert client.get("/upstream/demo/start?request=x").status_code == 404


def test_shop_can_ask_for_rs256_id_tokens(make_shop: object, make_client: object) -> None:
    from joserfc import jwt
    from joserfc.jwk import KeySet

    shop = make_shop("shop-rsa", id_token_signed_response_alg="RS256")  # type: ignore[operator]
    client = make_client()  # type: ignore[operator]
    final, _, verifier = sign_in(Browser(client), shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    keys = KeySet.import_key_set(client.get("/jwks").json())
    decoded = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256"


def test_shop_policy_is_public_and_versioned(client: TestClient, shop: ShopHandle) -> None:
    body = client.get(f"/policies/{shop.client_id}").json()
    assert body["version"] == 1 and body["purposes"][0]["id"] == "account"
    assert body["purposes"][0]["name"]["zh-CN"] == "账户"
    assert client.get(f"/policies/{shop.client_id}/v1").status_code == 200
    assert client.get(f"/policies/{shop.client_id}/v9").status_code == 404
    assert client.get("/policies/nobody").status_code == 404


def test_logout_with_another_persons_id_token_asks_before_ending_the_session(
    client: TestClient, shop: ShopHandle
) -> None:
    """Issue 14: any ID token used to end the victim's session silently (logout CSRF)."""
    attacker, victim = Browser(client), Browser(client)
    final, _, verifier = sign_in(attacker, shop, person="han-meimei")
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    sign_in(victim, shop)
    reply = victim.request("GET", "/logout?" + urlencode({
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": "https://shop.example/"}))
    assert reply.status_code == 200 and 'name="confirm"' in reply.text
    assert "__Host-cg_session" in victim.cookies
