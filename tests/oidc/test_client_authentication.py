"""Public clients (PKCE only), client_secret_post and private_key_jwt at the token endpoint."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.conftest import ISSUER, Browser, exchange_code, query_of, sign_in

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_public_client_exchanges_code_with_pkce_only(make_shop: Any, make_client: Any) -> None:
    shop = make_shop("app-public", token_endpoint_auth_method="none")
    client = make_client()
    final, _, verifier = sign_in(Browser(client), shop)
    code = query_of(final.headers["location"])["code"]
    reply = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": shop.redirect_uri, "code_verifier": verifier,
                                        "client_id": shop.client_id})
    assert reply.status_code == 200, reply.text
    assert "id_token" in reply.json()


def test_public_client_cannot_introspect(make_shop: Any, make_client: Any) -> None:
    shop = make_shop("app-public", token_endpoint_auth_method="none")
    client = make_client()
    reply = client.post("/introspect", data={"token": "x", "client_id": shop.client_id})
    assert reply.json()["error"] == "invalid_client"


def test_client_secret_post(make_shop: Any, make_client: Any) -> None:
    shop = make_shop("shop-post", token_endpoint_auth_method="client_secret_post")
    client = make_client()
    final, _, verifier = sign_in(Browser(client), shop)
    code = query_of(final.headers["location"])["code"]
    reply = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": shop.redirect_uri, "code_verifier": verifier,
                                        "client_id": shop.client_id, "client_secret": shop.secret})
    assert reply.status_code == 200, reply.text


def _assertion(key: ECKey, client_id: str, audience: Any = ISSUER,
               jti: str | None = None, lifetime: int = 60) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + lifetime,
              "jti": jti or secrets.token_urlsafe(8)}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])


def _private_key_shop(make_shop: Any, **fields: Any) -> tuple[Any, ECKey]:
    key = ECKey.generate_key("P-256", parameters={"kid": "shop-key-1"}, private=True)
    shop = make_shop("shop-jwt", token_endpoint_auth_method="private_key_jwt",
                     jwks={"keys": [key.as_dict(private=False)]}, **fields)
    return shop, key


def test_private_key_jwt_authenticates_the_shop(make_shop: Any, make_client: Any) -> None:
    shop, key = _private_key_shop(make_shop)
    client = make_client()
    final, _, verifier = sign_in(Browser(client), shop)
    code = query_of(final.headers["location"])["code"]
    reply = exchange_code(client, shop, code, verifier, client_assertion_type=ASSERTION_TYPE,
                          client_assertion=_assertion(key, shop.client_id))
    assert reply.status_code == 200, reply.text


def test_private_key_jwt_assertion_cannot_be_replayed(make_shop: Any, make_client: Any) -> None:
    shop, key = _private_key_shop(make_shop)
    client = make_client()
    assertion = _assertion(key, shop.client_id, jti="once")
    for expected in (200, 401):
        reply = client.post("/introspect", data={"token": "x", "client_assertion_type": ASSERTION_TYPE,
                                                 "client_assertion": assertion})
        if expected == 200:
            assert reply.status_code == 200, reply.text
        else:
            assert reply.json()["error"] == "invalid_client"


def test_private_key_jwt_signed_by_another_key_is_refused(make_shop: Any, make_client: Any) -> None:
    shop, _ = _private_key_shop(make_shop)
    client = make_client()
    stranger = ECKey.generate_key("P-256", parameters={"kid": "shop-key-1"}, private=True)
    reply = client.post("/introspect", data={"token": "x", "client_assertion_type": ASSERTION_TYPE,
                                             "client_assertion": _assertion(stranger, shop.client_id)})
    assert reply.json()["error"] == "invalid_client"


def test_private_key_jwt_for_another_audience_is_refused(make_shop: Any, make_client: Any) -> None:
    shop, key = _private_key_shop(make_shop)
    client = make_client()
    reply = client.post("/introspect", data={
        "token": "x", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": _assertion(key, shop.client_id, audience="https://elsewhere.example")})
    assert reply.json()["error"] == "invalid_client"


def test_malformed_client_assertion_is_invalid_client(make_shop: Any, make_client: Any) -> None:
    _private_key_shop(make_shop)
    client = make_client()
    reply = client.post("/introspect", data={"token": "x", "client_assertion_type": ASSERTION_TYPE,
                                             "client_assertion": "not.a.jwt"})
    assert reply.json()["error"] == "invalid_client"


@pytest.mark.parametrize("audience, lifetime", [
    (["https://evil.example", ISSUER], 60),  # an array naming another audience too (issue 14)
    ([ISSUER], 60),  # an array at all
    (f"{ISSUER}/token", 60),  # an endpoint URL
    (ISSUER, 365 * 86400),  # a year-long assertion (its jti would be kept a year)
    (ISSUER, 301),
])
def test_private_key_jwt_audience_is_the_issuer_alone_and_life_is_short(
    make_shop: Any, make_client: Any, audience: Any, lifetime: int
) -> None:
    shop, key = _private_key_shop(make_shop)
    client = make_client()
    reply = client.post("/introspect", data={
        "token": "x", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": _assertion(key, shop.client_id, audience=audience, lifetime=lifetime)})
    assert reply.json()["error"] == "invalid_client"


def test_a_legacy_shop_may_name_the_token_endpoint_as_the_single_audience(
    make_shop: Any, make_client: Any
) -> None:
    shop, key = _private_key_shop(make_shop, legacy_assertion_audience=True)
    client = make_client()
    for audience, accepted in ((f"{ISSUER}/token", True), ([f"{ISSUER}/token"], True),
                               ([f"{ISSUER}/token", "https://evil.example"], False)):
        reply = client.post("/introspect", data={
            "token": "x", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _assertion(key, shop.client_id, audience=audience, lifetime=600)})
        assert (reply.status_code == 200) == accepted, reply.text
