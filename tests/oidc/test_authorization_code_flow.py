"""The whole sign-in: authorize, demo sign-in, consent, code, tokens, userinfo."""

from __future__ import annotations

from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from tests.conftest import ISSUER, Browser, ShopHandle, exchange_code, query_of, sign_in


def decode_id_token(client: TestClient, token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(client.get("/jwks").json())
    return dict(jwt.decode(token, keys, algorithms=["ES256", "RS256"]).claims)


def test_sign_in_returns_code_with_state_and_issuer(client: TestClient, shop: ShopHandle) -> None:
    final, params, _ = sign_in(Browser(client), shop)
    assert final.status_code == 302
    location = final.headers["location"]
    assert location.startswith(shop.redirect_uri + "?")
    query = query_of(location)
    assert query["state"] == params["state"]
    assert query["iss"] == ISSUER
    assert len(query["code"]) >= 43


def test_code_exchange_returns_signed_id_token_with_pairwise_subject(
    client: TestClient, shop: ShopHandle
) -> None:
    final, params, verifier = sign_in(Browser(client), shop)
    reply = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier)
    assert reply.status_code == 200, reply.text
    assert reply.headers["cache-control"] == "no-store"
    token = reply.json()
    assert token["token_type"] == "Bearer"
    claims = decode_id_token(client, token["id_token"])
    assert claims["iss"] == ISSUER
    assert claims["aud"] == shop.client_id
    assert claims["nonce"] == params["nonce"]
    assert "at_hash" in claims
    assert "email" not in claims  # profile claims only through userinfo
    assert claims["sub"] not in ("li-lei",)


def test_userinfo_releases_only_the_granted_scopes(client: TestClient, shop: ShopHandle) -> None:
    final, _, verifier = sign_in(Browser(client), shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 200
    body = info.json()
    assert body["email"] == "lilei@example.com"
    assert body["nickname"] == "李雷"
    assert "phone_number" not in body  # phone scope not requested
    assert body["sub"] == decode_id_token(client, token["id_token"])["sub"]


def test_userinfo_accepts_post(client: TestClient, shop: ShopHandle) -> None:
    final, _, verifier = sign_in(Browser(client), shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    info = client.post("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 200


def test_second_sign_in_skips_login_and_consent(client: TestClient, shop: ShopHandle) -> None:
    browser = Browser(client)
    sign_in(browser, shop)
    final, _, _ = sign_in(browser, shop)
    assert final.status_code == 302
    assert "code" in query_of(final.headers["location"])
    consent_pages = [p for p in browser.pages
                     if p.request.method == "GET" and p.url.path == "/consent"]
    assert len(consent_pages) == 1


def test_same_person_gets_same_subject_and_different_shops_get_different_subjects(
    client: TestClient, make_shop: Any, make_client: Any
) -> None:
    other = make_shop("shop-b", redirect_uris=["https://other-shop.example/cb"])
    client = make_client()
    subjects = []
    shop_a = make_shop("shop-a")
    for target in (shop_a, shop_a, other):
        browser = Browser(client)
        final, _, verifier = sign_in(browser, target)
        token = exchange_code(client, target, query_of(final.headers["location"])["code"], verifier)
        subjects.append(decode_id_token(client, token.json()["id_token"])["sub"])
    assert subjects[0] == subjects[1]
    assert subjects[0] != subjects[2]


def test_consent_denied_returns_access_denied_to_the_shop(client: TestClient, shop: ShopHandle) -> None:
    final, params, _ = sign_in(Browser(client), shop, consent=False)
    assert final.status_code == 302
    query = query_of(final.headers["location"])
    assert query["error"] == "access_denied"
    assert query["state"] == params["state"]
    assert query["iss"] == ISSUER


def test_refresh_rotates_and_old_token_stops_working(client: TestClient, shop: ShopHandle) -> None:
    final, _, verifier = sign_in(Browser(client), shop)
    first = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    auth = (shop.client_id, shop.secret)
    second = client.post("/token", data={"grant_type": "refresh_token",
                                         "refresh_token": first["refresh_token"]}, auth=auth)
    assert second.status_code == 200, second.text
    assert second.json()["refresh_token"] != first["refresh_token"]
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {second.json()['access_token']}"})
    assert info.status_code == 200


def test_revocation_and_introspection(client: TestClient, shop: ShopHandle) -> None:
    final, _, verifier = sign_in(Browser(client), shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    auth = (shop.client_id, shop.secret)
    live = client.post("/introspect", data={"token": token["access_token"]}, auth=auth).json()
    assert live["active"] is True
    assert live["client_id"] == shop.client_id
    assert live["iss"] == ISSUER
    assert client.post("/revoke", data={"token": token["access_token"]}, auth=auth).status_code == 200
    dead = client.post("/introspect", data={"token": token["access_token"]}, auth=auth).json()
    assert dead == {"active": False}
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 401
    assert 'error="invalid_token"' in info.headers["www-authenticate"]
