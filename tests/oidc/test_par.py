"""Pushed authorization requests (RFC 9126): POST /par, then /authorize with the request_uri."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from gateway.config import Settings
from gateway.oidc.par import REQUEST_URI_PREFIX
from gateway.oidc.tokens import digest
from gateway.store import Store
from tests.conftest import (
    ISSUER,
    Browser,
    ShopHandle,
    authorize_params,
    exchange_code,
    pkce_pair,
    query_of,
)
from tests.interop.harness import authorize_in_browser
from tests.oidc.test_dpop import jkt_of, new_key, proof, redeem


def push(client: TestClient, shop: ShopHandle, params: dict[str, str], *,
         auth: Any = "shop") -> Any:
    """POST /par with the shop's client_secret_basic credentials (or ``auth``)."""
    if auth == "shop":
        auth = (shop.client_id, shop.secret) if shop.secret else None
    return client.post("/par", data=params, auth=auth)


def pushed(client: TestClient, shop: ShopHandle, **extra: str) -> tuple[str, dict[str, str], str]:
    """Push a valid request: (request_uri, the pushed parameters, the PKCE verifier)."""
    verifier, challenge = pkce_pair()
    params = authorize_params(shop, challenge, **extra)
    reply = push(client, shop, params)
    assert reply.status_code == 201, reply.text
    return reply.json()["request_uri"], params, verifier


def front(shop: ShopHandle, request_uri: str, **extra: str) -> str:
    return f"/authorize?{urlencode({'client_id': shop.client_id, 'request_uri': request_uri, **extra})}"


def test_pushed_request_answers_201_with_a_single_use_urn_and_its_lifetime(
        client: TestClient, shop: ShopHandle) -> None:
    reply = push(client, shop, authorize_params(shop, pkce_pair()[1]))
    assert reply.status_code == 201, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    assert set(body) == {"request_uri", "expires_in"}
    assert body["request_uri"].startswith(REQUEST_URI_PREFIX)
    assert len(body["request_uri"]) > len(REQUEST_URI_PREFIX) + 40  # 256 random bits
    assert body["expires_in"] == 60


def test_sign_in_through_a_pushed_request_returns_code_state_and_iss(
        client: TestClient, shop: ShopHandle) -> None:
    request_uri, params, verifier = pushed(client, shop)
    callback = authorize_in_browser(Browser(client), front(shop, request_uri))
    answer = query_of(callback)
    assert callback.startswith(shop.redirect_uri)
    assert answer["state"] == params["state"] and answer["iss"] == ISSUER
    tokens = exchange_code(client, shop, answer["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    assert "id_token" in tokens.json()


def test_front_channel_parameters_besides_client_id_and_request_uri_are_ignored(
        client: TestClient, shop: ShopHandle) -> None:
    request_uri, params, _ = pushed(client, shop)
    url = front(shop, request_uri, state="from-the-front", redirect_uri="https://evil.example/cb",
                code_challenge="x" * 43, response_type="token", scope="profile")
    callback = authorize_in_browser(Browser(client), url)
    assert callback.startswith(shop.redirect_uri)
    assert query_of(callback)["state"] == params["state"]


def test_request_uri_works_once(client: TestClient, shop: ShopHandle) -> None:
    request_uri, _, _ = pushed(client, shop)
    first = client.get(front(shop, request_uri))
    assert first.status_code == 302 and first.headers["location"].startswith("/login")
    again = client.get(front(shop, request_uri))
    assert again.status_code == 400
    assert "location" not in again.headers
    assert "invalid_request_uri" in again.text


def test_two_concurrent_authorize_requests_with_one_request_uri_proceed_exactly_once(
        client: TestClient, shop: ShopHandle) -> None:
    def present(uri: str, barrier: threading.Barrier, statuses: list[int]) -> None:
        barrier.wait()
        statuses.append(client.get(front(shop, uri)).status_code)

    for _ in range(5):
        request_uri, _, _ = pushed(client, shop)
        barrier = threading.Barrier(2)
        statuses: list[int] = []
        threads = [threading.Thread(target=present, args=(request_uri, barrier, statuses))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(statuses) == [302, 400]  # one sign-in goes on, the other is refused


def test_request_uri_is_bound_to_the_client_that_pushed_it(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]) -> None:
    shop_a, shop_b = make_shop("shop-a"), make_shop("shop-b")
    client = make_client()
    request_uri, _, _ = pushed(client, shop_a)
    stolen = client.get(front(shop_b, request_uri))
    assert stolen.status_code == 400 and "invalid_request_uri" in stolen.text
    assert "location" not in stolen.headers
    missing_client = client.get(f"/authorize?{urlencode({'request_uri': request_uri})}")
    assert missing_client.status_code == 400 and "location" not in missing_client.headers
    # Presented for another client, it was not used up: its own shop still can.
    own = client.get(front(shop_a, request_uri))
    assert own.status_code == 302 and own.headers["location"].startswith("/login")


def test_expired_request_uri_is_refused(client: TestClient, shop: ShopHandle, store: Store) -> None:
    request_uri, _, _ = pushed(client, shop)
    key = store.keys.pushed_request(shop.client_id, digest(request_uri))
    assert 55 <= store.redis.ttl(key) <= 60
    store.redis.pexpire(key, 1)  # Redis expires it, as it would after the lifetime
    time.sleep(0.05)
    reply = client.get(front(shop, request_uri))
    assert reply.status_code == 400 and "invalid_request_uri" in reply.text


def test_request_uri_lifetime_is_a_setting_between_60_and_90_seconds(
        shop: ShopHandle, make_client: Callable[..., TestClient], store: Store,
        make_settings: Callable[..., Settings]) -> None:
    client = make_client(par_request_uri_ttl=90)
    request_uri, _, _ = pushed(client, shop)
    reply_ttl = store.redis.ttl(store.keys.pushed_request(shop.client_id, digest(request_uri)))
    assert 85 <= reply_ttl <= 90
    for wrong in (59, 91, 600):
        with pytest.raises(ValidationError):
            make_settings(par_request_uri_ttl=wrong)


def test_unauthenticated_par_is_invalid_client_401(client: TestClient, shop: ShopHandle) -> None:
    params = authorize_params(shop, pkce_pair()[1])
    for auth in (None, (shop.client_id, "wrong-secret")):
        reply = push(client, shop, params, auth=auth)
        assert reply.status_code == 401, reply.text
        assert reply.json()["error"] == "invalid_client"
        assert reply.headers["content-type"] == "application/json"


def test_client_id_in_the_body_must_be_the_authenticated_client(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]) -> None:
    shop_a, shop_b = make_shop("shop-a"), make_shop("shop-b")
    client = make_client()
    params = authorize_params(shop_b, pkce_pair()[1])
    reply = push(client, shop_a, params)  # Basic for shop-a, body naming shop-b
    assert reply.json()["error"] == "invalid_client"
    # Exactly as the token endpoint answers the same confused request.
    token = client.post("/token", data={"grant_type": "authorization_code", "code": "x",
                                        "client_id": shop_b.client_id},
                        auth=(shop_a.client_id, shop_a.secret))
    assert (reply.status_code, reply.json()["error"]) == (token.status_code, token.json()["error"])


@pytest.mark.parametrize("change, error", [
    ({"redirect_uri": "https://evil.example/callback"}, "invalid_request"),
    ({"redirect_uri": ""}, "invalid_request"),
    ({"code_challenge": ""}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "profile"}, "invalid_scope"),
    ({"response_mode": "fragment"}, "invalid_request"),
    ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    ({"request_uri": f"{REQUEST_URI_PREFIX}nested"}, "invalid_request"),
    ({"prompt": "none login"}, "invalid_request"),
    ({"claims": "{not json"}, "invalid_request"),
    ({"state": "s" * 1025}, "invalid_request"),
])
def test_pushed_parameters_are_validated_like_authorize_with_a_json_400(
        client: TestClient, shop: ShopHandle, change: dict[str, str], error: str) -> None:
    params = authorize_params(shop, pkce_pair()[1], **change)
    reply = push(client, shop, params)
    assert reply.status_code == 400, reply.text
    assert "location" not in reply.headers
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"] == error


def test_prompt_none_is_pushed_and_decided_at_authorize(client: TestClient, shop: ShopHandle) -> None:
    request_uri, params, _ = pushed(client, shop, prompt="none")
    reply = client.get(front(shop, request_uri))
    assert reply.status_code == 302
    answer = query_of(reply.headers["location"])
    assert reply.headers["location"].startswith(shop.redirect_uri)
    assert answer == {"error": "login_required", "state": params["state"], "iss": ISSUER} | (
        {"error_description": answer["error_description"]} if "error_description" in answer else {})


def test_public_client_pushes_with_its_client_id(make_shop: Callable[..., ShopHandle],
                                                 make_client: Callable[..., TestClient]) -> None:
    shop = make_shop("app-public", token_endpoint_auth_method="none")
    client = make_client()
    request_uri, _, verifier = pushed(client, shop)
    callback = authorize_in_browser(Browser(client), front(shop, request_uri))
    code = query_of(callback)["code"]
    reply = client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": shop.redirect_uri, "code_verifier": verifier,
                                        "client_id": shop.client_id})
    assert reply.status_code == 200, reply.text


def test_a_shop_requiring_par_refuses_an_authorization_request_not_pushed(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]) -> None:
    strict = make_shop("shop-strict", require_pushed_authorization_requests=True)
    relaxed = make_shop("shop-relaxed")
    client = make_client()
    params = authorize_params(strict, pkce_pair()[1])
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    answer = query_of(reply.headers["location"])
    assert reply.headers["location"].startswith(strict.redirect_uri)
    assert (answer["error"], answer["state"], answer["iss"]) == ("invalid_request", params["state"], ISSUER)
    # An unregistered redirect URI still gets the error page, never a redirect.
    bad = client.get(f"/authorize?{urlencode({**params, 'redirect_uri': 'https://evil.example/'})}")
    assert bad.status_code == 400 and "location" not in bad.headers
    # Pushed, the same shop signs in; the other shop is unaffected.
    request_uri, _, _ = pushed(client, strict)
    assert query_of(authorize_in_browser(Browser(client), front(strict, request_uri)))["code"]
    plain = client.get(f"/authorize?{urlencode(authorize_params(relaxed, pkce_pair()[1]))}")
    assert plain.status_code == 302 and plain.headers["location"].startswith("/login")


def test_par_required_globally_refuses_every_shop_not_pushing_and_says_so_in_discovery(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    client = make_client(require_pushed_authorization_requests=True)
    params = authorize_params(shop, pkce_pair()[1])
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    assert query_of(reply.headers["location"])["error"] == "invalid_request"
    assert client.get("/.well-known/openid-configuration").json()[
        "require_pushed_authorization_requests"] is True
    request_uri, _, _ = pushed(client, shop)
    assert query_of(authorize_in_browser(Browser(client), front(shop, request_uri)))["code"]


def test_discovery_advertises_the_par_endpoint(client: TestClient) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        metadata = client.get(path).json()
        assert metadata["pushed_authorization_request_endpoint"] == f"{ISSUER}/par"
        assert metadata["require_pushed_authorization_requests"] is False
        assert metadata["request_parameter_supported"] is False


def test_a_request_uri_that_is_not_the_gateways_is_still_not_supported(
        client: TestClient, shop: ShopHandle) -> None:
    params = authorize_params(shop, pkce_pair()[1], request_uri="https://shop.example/request.jwt")
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    assert query_of(reply.headers["location"])["error"] == "request_uri_not_supported"


def test_pushed_requests_are_limited_per_authenticated_shop(
        make_client: Callable[..., TestClient], shop: ShopHandle, store: Store) -> None:
    client = make_client(rate_limit_par_per_shop={"count": 1, "per_seconds": 3600, "burst": 2})
    statuses = [push(client, shop, authorize_params(shop, pkce_pair()[1])).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    refused = push(client, shop, authorize_params(shop, pkce_pair()[1]))
    assert refused.json()["error"] == "temporarily_unavailable" and "retry-after" in refused.headers
    kept = list(store.redis.scan_iter(match=f"{store.keys.prefix}par:*"))
    assert len(kept) == 2  # a refused push keeps nothing
    # Unauthenticated pushes spend nothing of the shop's budget
    assert push(client, shop, authorize_params(shop, pkce_pair()[1]), auth=None).status_code == 401


def test_a_dpop_proof_at_par_binds_the_code_to_its_key(client: TestClient, shop: ShopHandle) -> None:
    """RFC 9449 §10.1: the proof sent with the push binds the code like dpop_jkt."""
    key = new_key()
    verifier, challenge = pkce_pair()
    params = authorize_params(shop, challenge)
    reply = client.post("/par", data=params, auth=(shop.client_id, shop.secret),
                        headers={"DPoP": proof(key, htu=f"{ISSUER}/par")})
    assert reply.status_code == 201, reply.text
    callback = authorize_in_browser(Browser(client), front(shop, reply.json()["request_uri"]))
    code = query_of(callback)["code"]
    assert redeem(client, shop, code, verifier).status_code == 400  # no proof: the code is bound
    other = redeem(client, shop, code, verifier, proof(new_key()))
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    bound = redeem(client, shop, code, verifier, proof(key))
    assert bound.status_code == 200, bound.text
    assert bound.json()["token_type"] == "DPoP"


def test_a_dpop_proof_at_par_must_match_a_pushed_dpop_jkt_and_be_fresh(
        client: TestClient, shop: ShopHandle) -> None:
    key = new_key()
    params = authorize_params(shop, pkce_pair()[1], dpop_jkt=jkt_of(new_key()))
    mismatch = client.post("/par", data=params, auth=(shop.client_id, shop.secret),
                           headers={"DPoP": proof(key, htu=f"{ISSUER}/par")})
    assert mismatch.status_code == 400 and mismatch.json()["error"] == "invalid_request"
    once = proof(key, htu=f"{ISSUER}/par")
    params = authorize_params(shop, pkce_pair()[1])
    first = client.post("/par", data=params, auth=(shop.client_id, shop.secret), headers={"DPoP": once})
    replay = client.post("/par", data=params, auth=(shop.client_id, shop.secret), headers={"DPoP": once})
    assert first.status_code == 201 and replay.status_code == 400
    assert replay.json()["error"] == "invalid_dpop_proof"
    wrong_url = client.post("/par", data=params, auth=(shop.client_id, shop.secret),
                            headers={"DPoP": proof(key)})  # htu names /token
    assert wrong_url.json()["error"] == "invalid_dpop_proof"
