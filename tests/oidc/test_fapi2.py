"""FAPI 2.0 Security Profile shops (``profile: fapi2``): PAR only, PKCE S256, private_key_jwt,
short codes, ``iss`` in the response, no request objects; impossible files refused at load."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from starlette.testclient import TestClient

from gateway.errors import ConfigError
from gateway.oidc import fapi
from gateway.oidc.clients import load_shop_file
from gateway.store import Store
from tests.conftest import ISSUER, Browser, ShopHandle, authorize_params, pkce_pair, query_of
from tests.interop.harness import authorize_in_browser
from tests.oidc.test_consistency import provider
from tests.oidc.test_dpop import USERINFO_URL, ath, new_key, proof

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
Key = ECKey | RSAKey


def assertion(key: Key, client_id: str, alg: str = "ES256") -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER, "iat": now, "exp": now + 60,
              "jti": secrets.token_urlsafe(12)}
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def client_auth(key: Key, shop: ShopHandle, alg: str = "ES256") -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(key, shop.client_id, alg)}


def fapi_shop(make_shop: Callable[..., ShopHandle], client_id: str = "shop-fapi",
              key: Key | None = None, **fields: Any) -> tuple[ShopHandle, Key]:
    key = key or ECKey.generate_key("P-256", parameters={"kid": "fapi-1"}, private=True)
    shop = make_shop(client_id, **{"profile": "fapi2", "token_endpoint_auth_method": "private_key_jwt",
                                   "jwks": {"keys": [key.as_dict(private=False)]}, **fields})
    return shop, key


def push(client: TestClient, shop: ShopHandle, key: Key, params: dict[str, str],
         alg: str = "ES256") -> Any:
    return client.post("/par", data={**params, **client_auth(key, shop, alg)})


def test_fapi_shop_signs_in_with_par_private_key_jwt_pkce_and_short_codes(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient],
        store: Store) -> None:
    shop, key = fapi_shop(make_shop)
    client = make_client(code_ttl=300)  # other shops' codes may live longer; not this one's
    verifier, challenge = pkce_pair()
    params = authorize_params(shop, challenge)
    reply = push(client, shop, key, params)
    assert reply.status_code == 201, reply.text
    url = f"/authorize?{urlencode({'client_id': shop.client_id, 'request_uri': reply.json()['request_uri']})}"
    callback = authorize_in_browser(Browser(client), url)
    answer = query_of(callback)
    assert answer["iss"] == ISSUER and answer["state"] == params["state"]  # RFC 9207
    code_ttl = store.redis.ttl(provider(client).tokens.code_key(answer["code"]))
    assert 0 < code_ttl <= 60
    holder = new_key()
    tokens = client.post("/token", data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": shop.redirect_uri,
        "code_verifier": verifier, **client_auth(key, shop)}, headers={"DPoP": proof(holder)})
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["token_type"] == "DPoP"  # FAPI 2.0 §5.3.2.1: sender-constrained
    header = json.loads(base64.urlsafe_b64decode(tokens.json()["id_token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256"
    access_token = tokens.json()["access_token"]
    userinfo = client.get("/userinfo", headers={
        "authorization": f"DPoP {access_token}",
        "DPoP": proof(holder, "GET", USERINFO_URL, ath=ath(access_token))})
    assert userinfo.status_code == 200, userinfo.text


def test_fapi_shop_refuses_an_authorization_request_not_pushed(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]) -> None:
    shop, _ = fapi_shop(make_shop)
    client = make_client()
    params = authorize_params(shop, pkce_pair()[1])
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    assert reply.headers["location"].startswith(shop.redirect_uri)
    answer = query_of(reply.headers["location"])
    assert (answer["error"], answer["iss"]) == ("invalid_request", ISSUER)
    assert "code" not in answer


@pytest.mark.parametrize("change, error", [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": "", "code_challenge_method": ""}, "invalid_request"),
    ({"code_challenge_method": ""}, "invalid_request"),
    ({"request": "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9."}, "request_not_supported"),
    ({"response_type": "code id_token"}, "unsupported_response_type"),
])
def test_fapi_shop_refuses_plain_or_missing_pkce_and_request_objects_at_par(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient],
        change: dict[str, str], error: str) -> None:
    shop, key = fapi_shop(make_shop)
    client = make_client()
    params = {k: v for k, v in authorize_params(shop, pkce_pair()[1], **change).items() if v}
    reply = push(client, shop, key, params)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"] == error


def test_fapi_shop_must_authenticate_at_par(make_shop: Callable[..., ShopHandle],
                                           make_client: Callable[..., TestClient]) -> None:
    shop, _ = fapi_shop(make_shop)
    client = make_client()
    params = authorize_params(shop, pkce_pair()[1])
    reply = client.post("/par", data=params)
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_client"
    stranger = ECKey.generate_key("P-256", parameters={"kid": "fapi-1"}, private=True)
    reply = push(client, shop, stranger, params)
    assert reply.json()["error"] == "invalid_client"  # as /token answers it (400)


def test_fapi_shop_assertions_must_use_a_fapi_algorithm(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "fapi-rsa"}, private=True)
    shop, _ = fapi_shop(make_shop, key=key)
    plain, _ = fapi_shop(make_shop, "shop-rsa-plain", key=key, profile="default")
    client = make_client()
    for who, alg, accepted in ((shop, "RS256", False), (shop, "PS256", True), (plain, "RS256", True)):
        reply = push(client, who, key, authorize_params(who, pkce_pair()[1]), alg)
        assert (reply.status_code == 201) == accepted, (who.client_id, alg, reply.text)
        if not accepted:
            assert reply.json()["error"] == "invalid_client"


def test_fapi_shop_id_tokens_avoid_rs256_even_when_it_is_the_default(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]) -> None:
    shop, key = fapi_shop(make_shop)
    client = make_client(signing_alg="RS256")
    verifier, challenge = pkce_pair()
    reply = push(client, shop, key, authorize_params(shop, challenge))
    url = f"/authorize?{urlencode({'client_id': shop.client_id, 'request_uri': reply.json()['request_uri']})}"
    code = query_of(authorize_in_browser(Browser(client), url))["code"]
    tokens = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": shop.redirect_uri,
        "code_verifier": verifier, **client_auth(key, shop)}, headers={"DPoP": proof(new_key())})
    header = json.loads(base64.urlsafe_b64decode(tokens.json()["id_token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256"


@pytest.mark.parametrize("auth", ["client_secret_basic", "client_secret_post", "none"])
def test_fapi_shop_file_with_a_shared_secret_or_no_authentication_is_refused_at_load(
        make_shop: Callable[..., ShopHandle], policies_dir: Path, auth: str) -> None:
    make_shop("shop-fapi", profile="fapi2", token_endpoint_auth_method=auth)
    path = policies_dir / "shops" / "shop-fapi.yaml"
    with pytest.raises(ConfigError) as refused:
        load_shop_file(path)
    message = str(refused.value)
    assert str(path) in message
    assert f"profile fapi2 needs token_endpoint_auth_method private_key_jwt, not {auth}" in message


@pytest.mark.parametrize("fields, complaint", [
    ({"legacy_assertion_audience": True}, "legacy_assertion_audience"),
    ({"require_pushed_authorization_requests": False}, "require_pushed_authorization_requests"),
    ({"id_token_signed_response_alg": "RS256"}, "id_token_signed_response_alg RS256"),
    ({"userinfo_signed_response_alg": "RS256"}, "userinfo_signed_response_alg RS256"),
])
def test_fapi_shop_file_asking_for_what_fapi_forbids_is_refused_at_load(
        make_shop: Callable[..., ShopHandle], policies_dir: Path, fields: dict[str, Any],
        complaint: str) -> None:
    fapi_shop(make_shop, **fields)
    with pytest.raises(ConfigError, match=complaint):
        load_shop_file(policies_dir / "shops" / "shop-fapi.yaml")


def test_a_fapi_shop_file_that_meets_the_profile_loads(
        make_shop: Callable[..., ShopHandle], policies_dir: Path) -> None:
    fapi_shop(make_shop, require_pushed_authorization_requests=True)
    config = load_shop_file(policies_dir / "shops" / "shop-fapi.yaml")
    assert config.profile == "fapi2"


def test_fapi_shop_tokens_are_always_sender_constrained(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient],
        policies_dir: Path) -> None:
    shop, key = fapi_shop(make_shop)  # no dpop_bound_access_tokens in its file
    assert fapi.sender_constrained(load_shop_file(policies_dir / "shops" / "shop-fapi.yaml"))
    client = make_client()
    verifier, challenge = pkce_pair()
    reply = push(client, shop, key, authorize_params(shop, challenge))
    url = f"/authorize?{urlencode({'client_id': shop.client_id, 'request_uri': reply.json()['request_uri']})}"
    code = query_of(authorize_in_browser(Browser(client), url))["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": shop.redirect_uri,
            "code_verifier": verifier}
    bearer = client.post("/token", data={**data, **client_auth(key, shop)})
    assert bearer.status_code == 400 and bearer.json()["error"] == "invalid_dpop_proof"
    bound = client.post("/token", data={**data, **client_auth(key, shop)},
                        headers={"DPoP": proof(new_key())})
    assert bound.status_code == 200, bound.text
    assert bound.json()["token_type"] == "DPoP"
