"""Cases that independent relying-party libraries found (tests/interop/), kept here so that
they are checked in-process on every run, without Node.js or a live server."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import OKPKey
from starlette.testclient import TestClient

from tests.conftest import ISSUER, Browser, ShopHandle, exchange_code, query_of, sign_in

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# -- Ed25519 client assertions (found by openid-client) ---------------------------------


def _ed25519_assertion(key: OKPKey, client_id: str, alg: str) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
              "jti": secrets.token_urlsafe(8)}
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


@pytest.mark.parametrize("alg", [
    "Ed25519",
    # joserfc warns on every use of the deprecated name, on both sides of this test.
    pytest.param("EdDSA", marks=pytest.mark.filterwarnings(
        "ignore:EdDSA is deprecated via RFC 9864:joserfc.errors.SecurityWarning")),
])
def test_ed25519_client_assertion_is_accepted_under_both_names(make_shop: Any, make_client: Any,
                                                              alg: str) -> None:
    """openid-client (oauth4webapi) signs with an Ed25519 key as ``alg: Ed25519``, the fully
    specified name of RFC 9864, which deprecates the polymorphic ``EdDSA``; older
    libraries still send ``EdDSA``. Both mean the same signature over the same key."""
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "shop-ed"}, private=True)
    shop = make_shop("shop-ed", token_endpoint_auth_method="private_key_jwt",
                     jwks={"keys": [key.as_dict(private=False)]})
    client = make_client()
    final, _, verifier = sign_in(Browser(client), shop)
    reply = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier,
                          client_assertion_type=ASSERTION_TYPE,
                          client_assertion=_ed25519_assertion(key, shop.client_id, alg))
    assert reply.status_code == 200, reply.text


def test_discovery_advertises_the_fully_specified_ed25519_name(client: TestClient) -> None:
    algs = client.get("/.well-known/openid-configuration").json()[
        "token_endpoint_auth_signing_alg_values_supported"]
    assert "Ed25519" in algs and "EdDSA" in algs
    assert not {"none", "HS256"} & set(algs)  # never a shared-secret or unsigned assertion


# -- scope values the gateway does not know (found by openid-client and oic) -----------


def test_unknown_scope_values_are_ignored_not_refused(client: TestClient, shop: ShopHandle) -> None:
    """OIDC Core §3.1.2.1: "Scope values used that are not understood by an implementation
    SHOULD be ignored." Relying-party libraries and SDKs commonly add ``offline_access``
    (OIDC Core §11); the gateway ignores it like any other unknown value."""
    final, _, verifier = sign_in(Browser(client), shop, scope="openid email offline_access x-custom")
    query = query_of(final.headers["location"])
    assert "error" not in query, query
    token = exchange_code(client, shop, query["code"], verifier).json()
    assert token["scope"].split() == ["openid", "email"]  # RFC 6749 §3.3: the granted scope
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert userinfo.json()["email"] == "lilei@example.com"


def test_a_request_without_openid_is_still_refused(client: TestClient, shop: ShopHandle) -> None:
    final, params, _ = sign_in(Browser(client), shop, scope="offline_access email")
    query = query_of(final.headers["location"])
    assert query["error"] == "invalid_scope"
    assert query["state"] == params["state"]


# -- RP-initiated logout by POST ---------------------------------------------------------


def test_logout_request_by_post_is_honoured(client: TestClient, shop: ShopHandle) -> None:
    """RP-Initiated Logout 1.0 §2: the OP MUST accept the logout request by GET and by POST
    (form serialisation); a shop's POST carries no CSRF token of the gateway's pages."""
    browser = Browser(client)
    final, _, verifier = sign_in(browser, shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    reply = browser.request("POST", "/logout", content=urlencode({
        "id_token_hint": token["id_token"], "client_id": shop.client_id,
        "post_logout_redirect_uri": "https://shop.example/", "state": "bye"}),
        headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 302
    assert reply.headers["location"] == "https://shop.example/?state=bye"
