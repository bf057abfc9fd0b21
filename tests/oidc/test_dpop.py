"""DPoP (RFC 9449): proofs at the token endpoint bind access tokens to the client's key;
bound tokens work at userinfo only with a matching proof. Proofs are made with jwcrypto, an
implementation independent of the gateway's joserfc."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwk, jws
from starlette.testclient import TestClient

from gateway.oidc.dpop import normalise_htu, thumbprint
from tests.conftest import ISSUER, Browser, ShopHandle, authorize_params, pkce_pair, query_of, sign_in

TOKEN_URL = f"{ISSUER}/token"
USERINFO_URL = f"{ISSUER}/userinfo"


def new_key(kind: str = "EC") -> jwk.JWK:
    if kind == "EC":
        return jwk.JWK.generate(kty="EC", crv="P-256")
    if kind == "OKP":
        return jwk.JWK.generate(kty="OKP", crv="Ed25519")
    return jwk.JWK.generate(kty="RSA", size=2048)


ALG_FOR = {"EC": "ES256", "OKP": "Ed25519", "RSA": "PS256"}


def jkt_of(key: jwk.JWK) -> str:
    return str(key.thumbprint())  # jwcrypto's own RFC 7638 thumbprint


def ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


def proof(key: jwk.JWK, htm: str = "POST", htu: str = TOKEN_URL, *, alg: str | None = None,
          header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A DPoP proof by ``key``; ``claims`` override or add to the usual ones (None drops one)."""
    body: dict[str, Any] = {"jti": secrets.token_urlsafe(12), "htm": htm, "htu": htu,
                            "iat": int(time.time())}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    protected = {"typ": "dpop+jwt", "alg": alg or ALG_FOR[key["kty"]],
                 "jwk": key.export_public(as_dict=True), **(header or {})}
    signed = jws.JWS(json.dumps(body))
    signed.add_signature(key, None, json.dumps(protected))
    return str(signed.serialize(compact=True))


def code_for(client: TestClient, shop: ShopHandle, **extra: str) -> tuple[str, str]:
    final, _, verifier = sign_in(Browser(client), shop, **extra)
    return query_of(final.headers["location"])["code"], verifier


def token_request(client: TestClient, shop: ShopHandle, data: dict[str, str],
                  dpop: str | list[str] | None = None) -> Any:
    headers: list[tuple[str, str]] = []
    for value in [dpop] if isinstance(dpop, str) else dpop or []:
        headers.append(("DPoP", value))
    auth = (shop.client_id, shop.secret) if shop.secret else None
    if not shop.secret:
        data = {**data, "client_id": shop.client_id}
    return client.post("/token", content=urlencode(data), auth=auth,
                       headers=[("content-type", "application/x-www-form-urlencoded"), *headers])


def redeem(client: TestClient, shop: ShopHandle, code: str, verifier: str,
           dpop: str | list[str] | None = None) -> Any:
    return token_request(client, shop, {"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": shop.redirect_uri,
                                        "code_verifier": verifier}, dpop)


def bound_tokens(client: TestClient, shop: ShopHandle, key: jwk.JWK) -> dict[str, Any]:
    code, verifier = code_for(client, shop)
    reply = redeem(client, shop, code, verifier, proof(key))
    assert reply.status_code == 200, reply.text
    tokens: dict[str, Any] = reply.json()
    return tokens


def userinfo(client: TestClient, token: str, dpop: str | None, scheme: str = "DPoP") -> Any:
    headers = {"Authorization": f"{scheme} {token}"}
    if dpop is not None:
        headers["DPoP"] = dpop
    return client.get("/userinfo", headers=headers)


def assert_error(reply: Any, status: int, error: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.json()["error"] == error, reply.text


def assert_dpop_challenge(reply: Any, error: str) -> None:
    assert_error(reply, 401, error)
    assert reply.headers["www-authenticate"].startswith(f'DPoP error="{error}"')


# -- issuing ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "alg"), [
    ("EC", "ES256"), ("OKP", "Ed25519"), ("RSA", "PS256"), ("RSA", "RS256"),
    # joserfc warns on every use of the deprecated name (docs/conformance.md).
    pytest.param("OKP", "EdDSA", marks=pytest.mark.filterwarnings(
        "ignore:EdDSA is deprecated via RFC 9864:joserfc.errors.SecurityWarning")),
])
def test_bound_token_is_issued_with_cnf_jkt(client: TestClient, shop: ShopHandle, kind: str,
                                            alg: str) -> None:
    key = new_key(kind)
    code, verifier = code_for(client, shop)
    reply = redeem(client, shop, code, verifier, proof(key, alg=alg))
    assert reply.status_code == 200, reply.text
    tokens = reply.json()
    assert tokens["token_type"] == "DPoP"
    info = client.post("/introspect", data={"token": tokens["access_token"]},
                       auth=(shop.client_id, shop.secret))
    assert info.status_code == 200
    assert info.json()["active"] is True
    assert info.json()["token_type"] == "DPoP"
    assert info.json()["cnf"] == {"jkt": jkt_of(key)}


def test_token_request_without_proof_still_gets_a_bearer_token(client: TestClient, shop: ShopHandle) -> None:
    code, verifier = code_for(client, shop)
    tokens = redeem(client, shop, code, verifier).json()
    assert tokens["token_type"] == "Bearer"
    info = client.post("/introspect", data={"token": tokens["access_token"]},
                       auth=(shop.client_id, shop.secret)).json()
    assert info["token_type"] == "Bearer" and "cnf" not in info
    assert userinfo(client, tokens["access_token"], None, "Bearer").status_code == 200


def test_discovery_advertises_dpop_signing_algorithms(client: TestClient) -> None:
    metadata = client.get("/.well-known/openid-configuration").json()
    assert set(metadata["dpop_signing_alg_values_supported"]) >= {"ES256", "EdDSA", "PS256", "RS256"}
    assert "HS256" not in metadata["dpop_signing_alg_values_supported"]


# -- the resource side -----------------------------------------------------------------


def test_userinfo_with_a_proof_works(client: TestClient, shop: ShopHandle) -> None:
    key = new_key()
    token = bound_tokens(client, shop, key)["access_token"]
    reply = userinfo(client, token, proof(key, "GET", USERINFO_URL, ath=ath(token)))
    assert reply.status_code == 200, reply.text
    assert reply.json()["sub"]
    by_post = client.post("/userinfo", headers={"Authorization": f"DPoP {token}",
                                                "DPoP": proof(key, "POST", USERINFO_URL, ath=ath(token))})
    assert by_post.status_code == 200, by_post.text


def test_same_token_as_bearer_is_refused(client: TestClient, shop: ShopHandle) -> None:
    key = new_key()
    token = bound_tokens(client, shop, key)["access_token"]
    assert_dpop_challenge(userinfo(client, token, None, "Bearer"), "invalid_token")
    # also with a valid proof next to it, and as a form parameter
    with_proof = userinfo(client, token, proof(key, "GET", USERINFO_URL, ath=ath(token)), "Bearer")
    assert_dpop_challenge(with_proof, "invalid_token")
    form = client.post("/userinfo", data={"access_token": token})
    assert_dpop_challenge(form, "invalid_token")


def test_proof_by_another_key_is_refused_at_userinfo(client: TestClient, shop: ShopHandle) -> None:
    token = bound_tokens(client, shop, new_key())["access_token"]
    other = new_key()
    assert_dpop_challenge(userinfo(client, token, proof(other, "GET", USERINFO_URL, ath=ath(token))),
                          "invalid_token")


def test_bearer_token_under_the_dpop_scheme_is_refused(client: TestClient, shop: ShopHandle) -> None:
    code, verifier = code_for(client, shop)
    token = redeem(client, shop, code, verifier).json()["access_token"]
    key = new_key()
    assert_dpop_challenge(userinfo(client, token, proof(key, "GET", USERINFO_URL, ath=ath(token))),
                          "invalid_token")


def test_dpop_scheme_without_a_proof_is_invalid_dpop_proof(client: TestClient, shop: ShopHandle) -> None:
    token = bound_tokens(client, shop, new_key())["access_token"]
    assert_dpop_challenge(userinfo(client, token, None), "invalid_dpop_proof")


def test_proof_replay_is_refused(client: TestClient, shop: ShopHandle) -> None:
    key = new_key()
    token = bound_tokens(client, shop, key)["access_token"]
    once = proof(key, "GET", USERINFO_URL, ath=ath(token))
    assert userinfo(client, token, once).status_code == 200
    assert_dpop_challenge(userinfo(client, token, once), "invalid_dpop_proof")


def test_proof_replay_at_the_token_endpoint_is_refused(client: TestClient, shop: ShopHandle) -> None:
    key = new_key()
    once = proof(key)
    code, verifier = code_for(client, shop)
    assert redeem(client, shop, code, verifier, once).status_code == 200
    code, verifier = code_for(client, shop)
    assert_error(redeem(client, shop, code, verifier, once), 400, "invalid_dpop_proof")


def test_two_concurrent_requests_with_one_proof_exactly_one_succeeds(
    client: TestClient, shop: ShopHandle, make_client: Callable[..., TestClient]
) -> None:
    key = new_key()
    token = bound_tokens(client, shop, key)["access_token"]
    workers = [client, make_client()]  # two apps on one Redis, like two gateway processes

    def call(worker: TestClient, value: str, barrier: threading.Barrier, statuses: list[int]) -> None:
        barrier.wait()
        statuses.append(userinfo(worker, token, value).status_code)

    for _ in range(5):
        once = proof(key, "GET", USERINFO_URL, ath=ath(token))
        barrier = threading.Barrier(len(workers))
        statuses: list[int] = []
        threads = [threading.Thread(target=call, args=(worker, once, barrier, statuses))
                   for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200, 401]


@pytest.mark.parametrize("wrong", [
    {"htm": "POST"},
    {"htu": f"{ISSUER}/token"},
    {"htu": "https://elsewhere.example/userinfo"},
    {"ath": ath("another token")},
    {"ath": None},
    {"jti": None},
])
def test_wrong_htm_htu_or_ath_is_refused_at_userinfo(client: TestClient, shop: ShopHandle,
                                                     wrong: dict[str, Any]) -> None:
    key = new_key()
    token = bound_tokens(client, shop, key)["access_token"]
    claims: dict[str, Any] = {"htm": "GET", "htu": USERINFO_URL, "ath": ath(token), **wrong}
    htm, htu = claims.pop("htm"), claims.pop("htu")
    assert_dpop_challenge(userinfo(client, token, proof(key, htm, htu, **claims)), "invalid_dpop_proof")


@pytest.mark.parametrize("wrong", [{"htm": "GET"}, {"htu": USERINFO_URL},
                                   {"htu": "https://attacker.example/token"}])
def test_wrong_htm_or_htu_is_refused_at_the_token_endpoint(client: TestClient, shop: ShopHandle,
                                                           wrong: dict[str, str]) -> None:
    code, verifier = code_for(client, shop)
    claims = {"htm": "POST", "htu": TOKEN_URL, **wrong}
    reply = redeem(client, shop, code, verifier, proof(new_key(), claims["htm"], claims["htu"]))
    assert_error(reply, 400, "invalid_dpop_proof")
    # the refused request did not use the code up
    assert redeem(client, shop, code, verifier, proof(new_key())).status_code == 200


def test_htu_is_compared_without_query_and_against_the_issuer_not_the_host(
    client: TestClient, shop: ShopHandle
) -> None:
    code, verifier = code_for(client, shop)
    forged_host = "evil.example"
    reply = client.post(
        "/token", content=urlencode({"grant_type": "authorization_code", "code": code,
                                     "redirect_uri": shop.redirect_uri, "code_verifier": verifier}),
        auth=(shop.client_id, shop.secret),
        headers={"content-type": "application/x-www-form-urlencoded", "host": forged_host,
                 "DPoP": proof(new_key(), "POST", f"https://{forged_host}/token")})
    assert_error(reply, 400, "invalid_dpop_proof")
    reply = redeem(client, shop, code, verifier, proof(new_key(), "POST", f"{TOKEN_URL}?x=1#f"))
    assert reply.status_code == 200, reply.text
    assert normalise_htu("HTTPS://Gateway.TEST:443/token?a=b") == TOKEN_URL


@pytest.mark.parametrize("age", [-3600, -120, 120])
def test_stale_or_future_iat_is_refused(client: TestClient, shop: ShopHandle, age: int) -> None:
    code, verifier = code_for(client, shop)
    reply = redeem(client, shop, code, verifier, proof(new_key(), iat=int(time.time()) + age))
    assert_error(reply, 400, "invalid_dpop_proof")


# -- nonces ----------------------------------------------------------------------------


def test_nonce_required_flow(shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    client = make_client(dpop_nonce_required=True)
    key = new_key()
    code, verifier = code_for(client, shop)
    first = redeem(client, shop, code, verifier, proof(key))
    assert_error(first, 400, "use_dpop_nonce")
    nonce = first.headers["dpop-nonce"]
    assert_error(redeem(client, shop, code, verifier, proof(key, nonce="made-up")), 400, "use_dpop_nonce")
    second = redeem(client, shop, code, verifier, proof(key, nonce=nonce))
    assert second.status_code == 200, second.text
    assert second.headers["dpop-nonce"]
    token = second.json()["access_token"]
    without = userinfo(client, token, proof(key, "GET", USERINFO_URL, ath=ath(token)))
    assert_dpop_challenge(without, "use_dpop_nonce")
    nonce = without.headers["dpop-nonce"]
    reply = userinfo(client, token, proof(key, "GET", USERINFO_URL, ath=ath(token), nonce=nonce))
    assert reply.status_code == 200, reply.text


def test_nonces_are_shared_by_workers_and_expire(
    shop: ShopHandle, make_client: Callable[..., TestClient]
) -> None:
    from gateway.oidc.dpop import DPoPVerifier

    one, two = make_client(dpop_nonce_required=True), make_client(dpop_nonce_required=True)
    key = new_key()
    code, verifier = code_for(one, shop)
    nonce = redeem(one, shop, code, verifier, proof(key)).headers["dpop-nonce"]
    assert redeem(two, shop, code, verifier, proof(key, nonce=nonce)).status_code == 200
    ctx = one.app.state.gateway.provider  # type: ignore[attr-defined]
    verifier_ = DPoPVerifier.for_context(ctx)
    lifetime = verifier_.nonce_lifetime
    now = time.time()
    assert verifier_._nonce_is_fresh(verifier_.nonce(now - lifetime), now)
    assert not verifier_._nonce_is_fresh(verifier_.nonce(now - 2 * lifetime), now)


# -- refresh, binding of codes, shops that require DPoP ---------------------------------


def test_refresh_with_another_key_is_refused(make_shop: Callable[..., ShopHandle],
                                             make_client: Callable[..., TestClient]) -> None:
    public = make_shop("app-a", token_endpoint_auth_method="none")
    client = make_client()
    key = new_key()
    tokens = bound_tokens(client, public, key)
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert_error(token_request(client, public, refresh, proof(new_key())), 400, "invalid_grant")
    assert_error(token_request(client, public, refresh), 400, "invalid_dpop_proof")
    again = token_request(client, public, refresh, proof(key))  # the refusals used nothing up
    assert again.status_code == 200, again.text
    assert again.json()["token_type"] == "DPoP"
    newer = {"grant_type": "refresh_token", "refresh_token": again.json()["refresh_token"]}
    assert_error(token_request(client, public, newer, proof(new_key())), 400, "invalid_grant")


def test_refresh_of_a_confidential_client_may_use_a_new_key(client: TestClient, shop: ShopHandle) -> None:
    tokens = bound_tokens(client, shop, new_key())
    key = new_key()
    reply = token_request(client, shop, {"grant_type": "refresh_token",
                                         "refresh_token": tokens["refresh_token"]}, proof(key))
    assert reply.status_code == 200, reply.text
    info = client.post("/introspect", data={"token": reply.json()["access_token"]},
                       auth=(shop.client_id, shop.secret)).json()
    assert info["cnf"] == {"jkt": jkt_of(key)}


def test_shop_requiring_dpop_refuses_token_requests_without_a_proof(
    make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]
) -> None:
    shop = make_shop(dpop_bound_access_tokens=True)
    client = make_client()
    code, verifier = code_for(client, shop)
    assert_error(redeem(client, shop, code, verifier), 400, "invalid_dpop_proof")
    tokens = redeem(client, shop, code, verifier, proof(new_key()))
    assert tokens.status_code == 200 and tokens.json()["token_type"] == "DPoP"
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"]}
    assert_error(token_request(client, shop, refresh), 400, "invalid_dpop_proof")


def test_public_clients_must_use_dpop_when_the_gateway_says_so(
    make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]
) -> None:
    public = make_shop("app-a", token_endpoint_auth_method="none")
    confidential = make_shop("shop-b")
    client = make_client(dpop_required_for_public_clients=True)
    code, verifier = code_for(client, public)
    assert_error(redeem(client, public, code, verifier), 400, "invalid_dpop_proof")
    assert redeem(client, public, code, verifier, proof(new_key())).status_code == 200
    code, verifier = code_for(client, confidential)
    assert redeem(client, confidential, code, verifier).json()["token_type"] == "Bearer"


def test_dpop_jkt_binds_the_code_to_a_key(client: TestClient, shop: ShopHandle) -> None:
    key = new_key()
    code, verifier = code_for(client, shop, dpop_jkt=jkt_of(key))
    assert_error(redeem(client, shop, code, verifier), 400, "invalid_dpop_proof")
    assert_error(redeem(client, shop, code, verifier, proof(new_key())), 400, "invalid_grant")
    reply = redeem(client, shop, code, verifier, proof(key))
    assert reply.status_code == 200, reply.text
    assert reply.json()["token_type"] == "DPoP"


def test_malformed_dpop_jkt_is_refused_at_authorization(client: TestClient, shop: ShopHandle) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(shop, challenge, dpop_jkt="not a thumbprint")
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    assert query_of(reply.headers["location"])["error"] == "invalid_request"


# -- malformed proofs ------------------------------------------------------------------


def test_private_key_in_jwk_is_refused(client: TestClient, shop: ShopHandle) -> None:
    key = new_key()
    code, verifier = code_for(client, shop)
    leaky = proof(key, header={"jwk": key.export_private(as_dict=True)})
    assert_error(redeem(client, shop, code, verifier, leaky), 400, "invalid_dpop_proof")


def test_hs256_proof_is_refused(client: TestClient, shop: ShopHandle) -> None:
    secret = jwk.JWK.generate(kty="oct", size=256)
    ec = new_key()
    code, verifier = code_for(client, shop)
    # a MAC with the symmetric key in the header, and one naming a public EC key
    for header in ({"jwk": secret.export(as_dict=True)}, {"jwk": ec.export_public(as_dict=True)}):
        body = json.dumps({"jti": secrets.token_urlsafe(8), "htm": "POST", "htu": TOKEN_URL,
                           "iat": int(time.time())})
        signed = jws.JWS(body)
        signed.add_signature(secret, None, json.dumps({"typ": "dpop+jwt", "alg": "HS256", **header}))
        reply = redeem(client, shop, code, verifier, str(signed.serialize(compact=True)))
        assert_error(reply, 400, "invalid_dpop_proof")


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


@pytest.mark.parametrize("make_value", [
    lambda key: "garbage",
    lambda key: "a.b.c",
    lambda key: "x" * 20000,
    lambda key: proof(key, header={"typ": "JWT"}),
    lambda key: proof(key, header={"jwk": "not an object"}),
    lambda key: proof(key).rsplit(".", 1)[0] + "." + "A" * 86,  # a signature that fails
    lambda key: _unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": key.export_public(as_dict=True)},
                          {"jti": "j", "htm": "POST", "htu": TOKEN_URL, "iat": int(time.time())}),
    lambda key: [proof(key), proof(key)],  # two DPoP headers
    lambda key: proof(key, iat=float("nan")),  # not JSON, and in every window if compared
    lambda key: proof(key, iat="now"),
    lambda key: proof(key, htu="https://[gateway.test/token"),
    lambda key: proof(key, htu="https://gateway.test:port/token"),
], ids=["garbage", "dots", "huge", "typ", "jwk", "signature", "alg-none", "two-headers", "iat-nan",
        "iat-string", "htu-bracket", "htu-port"])
def test_malformed_proof_is_invalid_dpop_proof_400(client: TestClient, shop: ShopHandle,
                                                   make_value: Callable[[jwk.JWK], Any]) -> None:
    code, verifier = code_for(client, shop)
    reply = redeem(client, shop, code, verifier, make_value(new_key()))
    assert_error(reply, 400, "invalid_dpop_proof")
    assert reply.headers["content-type"].startswith("application/json")


# -- thumbprints -----------------------------------------------------------------------

_EC_KEY = jwk.JWK.generate(kty="EC", crv="P-256")
_RSA_KEY = jwk.JWK.generate(kty="RSA", size=2048)


@settings(max_examples=50, deadline=None)
@given(key=st.sampled_from([_EC_KEY, _RSA_KEY]), seed=st.randoms(use_true_random=False),
       extra=st.dictionaries(st.sampled_from(["kid", "use", "alg", "key_ops", "x5t"]),
                             st.text(max_size=8), max_size=3))
def test_thumbprint_is_stable_under_member_reordering(key: jwk.JWK, seed: Any,
                                                      extra: dict[str, str]) -> None:
    members = list({**key.export_public(as_dict=True), **extra}.items())
    seed.shuffle(members)
    assert thumbprint(dict(members)) == jkt_of(key)


def test_openapi_documents_the_dpop_header_and_scheme(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["dpopToken"]["scheme"] == "dpop"
    for method, path in (("post", "/token"), ("get", "/userinfo"), ("post", "/userinfo")):
        operation = document["paths"][path][method]
        assert any(p["name"] == "DPoP" and p["in"] == "header" for p in operation["parameters"])
    token_reply = document["paths"]["/token"]["post"]["responses"]["200"]
    assert token_reply["headers"]["DPoP-Nonce"]["required"] is False


def test_records_without_dpop_store_no_binding(client: TestClient, shop: ShopHandle,
                                               store: Any) -> None:
    """A Bearer token's record has no DPoP member at all (``j``: gateway/oidc/credentials.py),
    a bound one has it; no code record names a key it was not bound to."""
    code, verifier = code_for(client, shop)
    redeem(client, shop, code, verifier)
    bound_tokens(client, shop, new_key())
    stored = [json.loads(store.redis.get(key))
              for key in store.redis.scan_iter(f"{store.keys.prefix}{{*}}:at:*")]
    assert sorted("j" in record for record in stored) == [False, True]
    codes = [json.loads(store.redis.get(key).removeprefix(b"!"))
             for key in store.redis.scan_iter(f"{store.keys.prefix}{{*}}:code:*")]
    assert codes and all("j" not in record for record in codes)
