"""Token, revocation and introspection endpoints answer bad input with RFC 6749 JSON."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in


def signed_in_code(client: TestClient, shop: ShopHandle) -> tuple[str, str]:
    final, _, verifier = sign_in(Browser(client), shop)
    return query_of(final.headers["location"])["code"], verifier


def assert_oauth_error(reply: Any, status: int, error: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["error"] == error


def test_wrong_verifier_is_invalid_grant(client: TestClient, shop: ShopHandle) -> None:
    code, _ = signed_in_code(client, shop)
    reply = exchange_code(client, shop, code, "x" * 50)
    assert_oauth_error(reply, 400, "invalid_grant")


def test_missing_verifier_is_invalid_request(client: TestClient, shop: ShopHandle) -> None:
    code, _ = signed_in_code(client, shop)
    reply = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": shop.redirect_uri},
                        auth=(shop.client_id, shop.secret))
    assert_oauth_error(reply, 400, "invalid_request")


def test_code_used_twice_fails_and_revokes_the_first_tokens(client: TestClient, shop: ShopHandle) -> None:
    code, verifier = signed_in_code(client, shop)
    first = exchange_code(client, shop, code, verifier)
    assert first.status_code == 200
    tokens = first.json()
    second = exchange_code(client, shop, code, verifier)
    assert_oauth_error(second, 400, "invalid_grant")
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 401
    refresh = client.post("/token", data={"grant_type": "refresh_token",
                                          "refresh_token": tokens["refresh_token"]},
                          auth=(shop.client_id, shop.secret))
    assert_oauth_error(refresh, 400, "invalid_grant")


def test_expired_code_is_invalid_grant(client: TestClient, shop: ShopHandle, store: Any) -> None:
    code, verifier = signed_in_code(client, shop)
    for key in store.redis.scan_iter(match=f"{store.keys.prefix}{{*}}:code:*"):
        store.redis.pexpire(key, 1)
    import time

    time.sleep(0.01)
    assert_oauth_error(exchange_code(client, shop, code, verifier), 400, "invalid_grant")


def test_code_issued_to_another_shop_is_invalid_grant(
    client: TestClient, shop: ShopHandle, make_shop: Any, make_client: Any
) -> None:
    other = make_shop("shop-b")
    client = make_client()
    code, verifier = signed_in_code(client, shop)
    reply = exchange_code(client, other, code, verifier, redirect_uri=shop.redirect_uri)
    assert_oauth_error(reply, 400, "invalid_grant")


def test_redirect_uri_must_match_the_authorization_request(client: TestClient, shop: ShopHandle) -> None:
    code, verifier = signed_in_code(client, shop)
    reply = exchange_code(client, shop, code, verifier, redirect_uri="https://shop.example/other")
    assert_oauth_error(reply, 400, "invalid_grant")


@pytest.mark.parametrize("auth", [("shop-a", "wrong-secret"), ("nobody", "secret")])
def test_wrong_client_credentials_are_invalid_client(
    client: TestClient, shop: ShopHandle, auth: tuple[str, str]
) -> None:
    code, verifier = signed_in_code(client, shop)
    reply = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": shop.redirect_uri, "code_verifier": verifier},
                        auth=auth)
    assert_oauth_error(reply, 401, "invalid_client")


def test_missing_client_authentication_is_invalid_client(client: TestClient, shop: ShopHandle) -> None:
    code, verifier = signed_in_code(client, shop)
    reply = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": shop.redirect_uri, "code_verifier": verifier,
                                        "client_id": shop.client_id})
    assert reply.status_code in (400, 401)
    assert reply.json()["error"] == "invalid_client"


def test_client_secret_post_is_refused_for_a_basic_client(client: TestClient, shop: ShopHandle) -> None:
    code, verifier = signed_in_code(client, shop)
    reply = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": shop.redirect_uri, "code_verifier": verifier,
                                        "client_id": shop.client_id, "client_secret": shop.secret})
    assert reply.json()["error"] == "invalid_client"


def test_refresh_token_reuse_revokes_the_whole_family(client: TestClient, shop: ShopHandle) -> None:
    code, verifier = signed_in_code(client, shop)
    first = exchange_code(client, shop, code, verifier).json()
    auth = (shop.client_id, shop.secret)
    rotated = client.post("/token", data={"grant_type": "refresh_token",
                                          "refresh_token": first["refresh_token"]}, auth=auth).json()
    replay = client.post("/token", data={"grant_type": "refresh_token",
                                         "refresh_token": first["refresh_token"]}, auth=auth)
    assert_oauth_error(replay, 400, "invalid_grant")
    for access in (first["access_token"], rotated["access_token"]):
        info = client.get("/userinfo", headers={"Authorization": f"Bearer {access}"})
        assert info.status_code == 401
    after = client.post("/token", data={"grant_type": "refresh_token",
                                        "refresh_token": rotated["refresh_token"]}, auth=auth)
    assert_oauth_error(after, 400, "invalid_grant")


def test_unknown_grant_type(client: TestClient, shop: ShopHandle) -> None:
    reply = client.post("/token", data={"grant_type": "password", "username": "a", "password": "b"},
                        auth=(shop.client_id, shop.secret))
    assert_oauth_error(reply, 400, "unsupported_grant_type")


def test_oversized_body_is_refused(client: TestClient, shop: ShopHandle) -> None:
    reply = client.post("/token", content=b"grant_type=authorization_code&code=" + b"a" * 200_000,
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert_oauth_error(reply, 413, "invalid_request")


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect", "/userinfo"])
def test_non_utf8_body_is_refused(client: TestClient, shop: ShopHandle, path: str) -> None:
    reply = client.post(path, content=b"grant_type=\xff\xfe&code=\xc3\x28",
                        headers={"content-type": "application/x-www-form-urlencoded"},
                        auth=(shop.client_id, shop.secret))
    assert_oauth_error(reply, 400, "invalid_request")


def test_wrong_content_type_is_refused(client: TestClient, shop: ShopHandle) -> None:
    reply = client.post("/token", content=b'{"grant_type": "authorization_code"}',
                        headers={"content-type": "application/json"},
                        auth=(shop.client_id, shop.secret))
    assert_oauth_error(reply, 400, "invalid_request")


def test_introspection_of_another_shops_token_is_inactive(
    client: TestClient, shop: ShopHandle, make_shop: Any, make_client: Any
) -> None:
    other = make_shop("shop-b")
    client = make_client()
    code, verifier = signed_in_code(client, shop)
    token = exchange_code(client, shop, code, verifier).json()
    reply = client.post("/introspect", data={"token": token["access_token"]},
                        auth=(other.client_id, other.secret))
    assert reply.json() == {"active": False}


def test_introspection_requires_client_authentication(client: TestClient, shop: ShopHandle) -> None:
    reply = client.post("/introspect", data={"token": "anything"})
    assert reply.status_code in (400, 401)
    assert reply.json()["error"] == "invalid_client"


def test_revoking_a_refresh_token_ends_its_access_tokens(client: TestClient, shop: ShopHandle) -> None:
    code, verifier = signed_in_code(client, shop)
    token = exchange_code(client, shop, code, verifier).json()
    auth = (shop.client_id, shop.secret)
    reply = client.post("/revoke", data={"token": token["refresh_token"],
                                         "token_type_hint": "refresh_token"}, auth=auth)
    assert reply.status_code == 200
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 401


def test_revoking_an_unknown_token_succeeds_quietly(client: TestClient, shop: ShopHandle) -> None:
    reply = client.post("/revoke", data={"token": "not-a-token"}, auth=(shop.client_id, shop.secret))
    assert reply.status_code == 200


def test_revocation_without_token_is_invalid_request(client: TestClient, shop: ShopHandle) -> None:
    reply = client.post("/revoke", data={}, auth=(shop.client_id, shop.secret))
    assert_oauth_error(reply, 400, "invalid_request")


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer  ", "token"])
def test_userinfo_with_malformed_authorization(client: TestClient, header: str) -> None:
    reply = client.get("/userinfo", headers={"Authorization": header})
    assert reply.status_code in (400, 401)
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_userinfo_without_token_gets_a_bare_challenge(client: TestClient) -> None:
    reply = client.get("/userinfo")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == 'Bearer realm="consent-gateway"'
