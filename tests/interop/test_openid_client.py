"""The gateway driven by ``openid-client`` (Node.js, panva; v6 on oauth4webapi).

openid-client is an OpenID-certified relying party library. Every check below that
concerns the protocol is made by the library itself, with its defaults (issuer and ``iss``
parameter per RFC 9207, state, PKCE, nonce, ID token signature and claims, userinfo
``sub``, response content types); the tests only look at what it returns or refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.conftest import ShopHandle
from tests.interop.harness import (
    LiveGateway,
    NodeRelyingParty,
    RelyingPartyError,
    authorize_in_browser,
)

SCOPE = "openid profile email phone"


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _shop(make_shop: Callable[..., ShopHandle], client_id: str, auth: str,
          **fields: Any) -> ShopHandle:
    host = f"{client_id}.shop.example"
    return make_shop(client_id, token_endpoint_auth_method=auth,
                     redirect_uris=[f"https://{host}/callback"],
                     post_logout_redirect_uris=[f"https://{host}/signed-out"], **fields)


def _connect(rp: NodeRelyingParty, gateway: LiveGateway, shop: ShopHandle, auth: str,
             **extra: Any) -> dict[str, Any]:
    return dict(rp.call("discover", issuer=gateway.issuer, client_id=shop.client_id, auth=auth,
                        client_secret=shop.secret, **extra))


def _sign_in(rp: NodeRelyingParty, gateway: LiveGateway, shop: ShopHandle,
             person: str = "li-lei", **params: str) -> tuple[dict[str, Any], str]:
    """Authorization code flow: openid-client builds the URL, the person signs in and
    consents in the browser, openid-client validates the callback and redeems the code."""
    request = rp.call("authorization_url", redirect_uri=shop.redirect_uri, scope=SCOPE,
                      params=params)
    callback = authorize_in_browser(gateway.browser(), request["url"], person)
    return dict(rp.call("code_grant", callback_url=callback)), request["url"]


# -- discovery -------------------------------------------------------------------------


@pytest.mark.parametrize("document", ["oidc", "oauth2"])
def test_discovery_is_accepted(live_gateway: Callable[[], LiveGateway], node_rp: Any,
                               make_shop: Callable[..., ShopHandle], document: str) -> None:
    """OpenID Connect Discovery 1.0 (``oidc``) and RFC 8414 (``oauth2``): openid-client
    fetches the well-known document and checks that its issuer is the one asked for."""
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    metadata = _connect(rp, gateway, shop, "client_secret_basic", algorithm=document)
    assert metadata["issuer"] == gateway.issuer
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    tokens, _ = _sign_in(rp, gateway, shop)  # and the endpoints it found work
    assert tokens["claims"]["iss"] == gateway.issuer


# -- authorization code, ID token, userinfo (client_secret_basic) ----------------------


def test_code_flow_with_pkce_state_nonce_and_id_token_validation(
        live_gateway: Callable[[], LiveGateway], node_rp: Any,
        make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "client_secret_basic")
    tokens, url = _sign_in(rp, gateway, shop)

    sent = _query(url)
    assert sent["code_challenge_method"] == "S256" and sent["state"] and sent["nonce"]
    assert tokens["token_type"].lower() == "bearer"
    claims = tokens["claims"]  # validated by openid-client: signature, iss, aud, exp, iat, nonce
    assert claims["iss"] == gateway.issuer
    assert claims["aud"] == shop.client_id
    assert claims["nonce"] == sent["nonce"]
    assert claims["at_hash"]


def test_userinfo_subject_matches_the_id_token(
        live_gateway: Callable[[], LiveGateway], node_rp: Any,
        make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "client_secret_basic")
    tokens, _ = _sign_in(rp, gateway, shop, person="han-meimei")
    userinfo = rp.call("userinfo")  # openid-client checks sub against the ID token's
    assert userinfo["sub"] == tokens["claims"]["sub"]
    assert userinfo["email"] == "meimei@example.com"
    assert userinfo["phone_number"] != "13987654321"  # masked by the shop's policy


def test_unknown_scope_values_such_as_offline_access_are_ignored(
        live_gateway: Callable[[], LiveGateway], node_rp: Any,
        make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "client_secret_basic")
    request = rp.call("authorization_url", redirect_uri=shop.redirect_uri,
                      scope="openid email offline_access")
    tokens = rp.call("code_grant", callback_url=authorize_in_browser(gateway.browser(), request["url"]))
    assert tokens["scope"] == "openid email" and tokens["refresh_token"]


def test_max_age_gets_auth_time(live_gateway: Callable[[], LiveGateway], node_rp: Any,
                                make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "client_secret_basic")
    tokens, _ = _sign_in(rp, gateway, shop, max_age="300")  # openid-client checks auth_time
    assert isinstance(tokens["claims"]["auth_time"], int)


def test_pairwise_subjects_differ_between_shops(
        live_gateway: Callable[[], LiveGateway], node_rp: Any,
        make_shop: Callable[..., ShopHandle]) -> None:
    first = _shop(make_shop, "node-basic", "client_secret_basic")
    second = _shop(make_shop, "node-other", "client_secret_basic")
    gateway = live_gateway()
    subjects = []
    for shop in (first, second):
        rp = node_rp()
        _connect(rp, gateway, shop, "client_secret_basic")
        tokens, _ = _sign_in(rp, gateway, shop)
        subjects.append(tokens["claims"]["sub"])
    assert subjects[0] != subjects[1]


# -- refresh, introspection, revocation ------------------------------------------------


@pytest.mark.parametrize("auth", ["client_secret_basic", "client_secret_post"])
def test_refresh_rotates_the_refresh_token(live_gateway: Callable[[], LiveGateway], node_rp: Any,
                                          make_shop: Callable[..., ShopHandle], auth: str) -> None:
    shop = _shop(make_shop, "node-secret", auth)
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, auth)
    tokens, _ = _sign_in(rp, gateway, shop)
    refreshed = rp.call("refresh")
    assert refreshed["access_token"] != tokens["access_token"]
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert rp.call("userinfo")["sub"] == tokens["claims"]["sub"]
    with pytest.raises(RelyingPartyError) as refused:
        rp.call("refresh", refresh_token=tokens["refresh_token"])  # the old one is spent
    assert refused.value.details["error"] == "invalid_grant"


def test_introspection_and_revocation(live_gateway: Callable[[], LiveGateway], node_rp: Any,
                                      make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "client_secret_basic")
    tokens, _ = _sign_in(rp, gateway, shop)

    active = rp.call("introspect", token=tokens["access_token"])
    assert active["active"] is True
    assert active["client_id"] == shop.client_id and active["sub"] == tokens["claims"]["sub"]
    assert rp.call("introspect", token=tokens["refresh_token"],
                   token_type_hint="refresh_token")["active"] is True

    rp.call("revoke", token=tokens["refresh_token"], token_type_hint="refresh_token")
    assert rp.call("introspect", token=tokens["access_token"]) == {"active": False}
    assert rp.call("introspect", token=tokens["refresh_token"]) == {"active": False}
    with pytest.raises(RelyingPartyError) as refused:
        rp.call("userinfo", access_token=tokens["access_token"])
    assert refused.value.details["status"] == 401  # RFC 6750 §3.1 invalid_token challenge
    assert refused.value.details["error"] == "invalid_token"


def test_revoking_an_access_token(live_gateway: Callable[[], LiveGateway], node_rp: Any,
                                  make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "client_secret_basic")
    tokens, _ = _sign_in(rp, gateway, shop)
    rp.call("revoke", token=tokens["access_token"])  # no hint: RFC 7009 §2.1
    assert rp.call("introspect", token=tokens["access_token"]) == {"active": False}
    assert rp.call("introspect", token=tokens["refresh_token"])["active"] is True
    rp.call("revoke", token="never-issued")  # RFC 7009 §2.2: an unknown token is fine


# -- RP-initiated logout ---------------------------------------------------------------


def test_rp_initiated_logout_ends_the_session(live_gateway: Callable[[], LiveGateway], node_rp: Any,
                                             make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "client_secret_basic")
    request = rp.call("authorization_url", redirect_uri=shop.redirect_uri, scope=SCOPE)
    browser = gateway.browser()
    tokens = rp.call("code_grant", callback_url=authorize_in_browser(browser, request["url"]))

    # While signed in, prompt=none gets a code straight away.
    request = rp.call("authorization_url", redirect_uri=shop.redirect_uri, scope=SCOPE,
                      params={"prompt": "none"})
    again = browser.follow(request["url"])
    assert rp.call("code_grant", callback_url=again.headers["location"])["claims"]["sub"] == \
        tokens["claims"]["sub"]

    post_logout = f"https://{shop.client_id}.shop.example/signed-out"
    logout = rp.call("end_session_url", params={
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": post_logout,
        "state": "see-you"})["url"]
    assert logout.startswith(f"{gateway.issuer}/logout?")
    assert _query(logout)["client_id"] == shop.client_id
    response = browser.follow(logout)
    assert response.status_code == 302
    assert response.headers["location"] == f"{post_logout}?state=see-you"

    # The gateway ended the session: prompt=none now comes back as login_required, an
    # error response that openid-client accepts (state and iss checked) and reports.
    request = rp.call("authorization_url", redirect_uri=shop.redirect_uri, scope=SCOPE,
                      params={"prompt": "none"})
    answer = browser.follow(request["url"])
    with pytest.raises(RelyingPartyError) as refused:
        rp.call("code_grant", callback_url=answer.headers["location"])
    assert refused.value.details["error"] == "login_required"


def test_denied_consent_reaches_the_shop_as_access_denied(
        live_gateway: Callable[[], LiveGateway], node_rp: Any,
        make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-basic", "client_secret_basic")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "client_secret_basic")
    request = rp.call("authorization_url", redirect_uri=shop.redirect_uri, scope=SCOPE)
    callback = authorize_in_browser(gateway.browser(), request["url"], consent=False)
    with pytest.raises(RelyingPartyError) as refused:
        rp.call("code_grant", callback_url=callback)
    assert refused.value.details["error"] == "access_denied"


# -- other kinds of client -------------------------------------------------------------


def _client_key(alg: str) -> ECKey | RSAKey | OKPKey:
    kid = {"kid": f"node-{alg.lower()}"}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=kid, private=True)
    if alg == "Ed25519":
        return OKPKey.generate_key("Ed25519", parameters=kid, private=True)
    return RSAKey.generate_key(2048, parameters=kid, private=True)


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "Ed25519"])
def test_private_key_jwt_client(live_gateway: Callable[[], LiveGateway], node_rp: Any,
                                make_shop: Callable[..., ShopHandle], alg: str) -> None:
    key = _client_key(alg)
    shop = _shop(make_shop, "node-jwt", "private_key_jwt",
                 jwks={"keys": [key.as_dict(private=False)]}, id_token_signed_response_alg="RS256")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "private_key_jwt", private_jwk=key.as_dict(private=True),
             assertion_alg=alg, metadata={"id_token_signed_response_alg": "RS256"})
    tokens, _ = _sign_in(rp, gateway, shop)  # the code is redeemed with a client assertion
    assert tokens["claims"]["aud"] == shop.client_id
    refreshed = rp.call("refresh")
    assert rp.call("introspect", token=refreshed["access_token"])["active"] is True
    rp.call("revoke", token=refreshed["refresh_token"])
    assert rp.call("introspect", token=refreshed["access_token"]) == {"active": False}


def test_public_client(live_gateway: Callable[[], LiveGateway], node_rp: Any,
                       make_shop: Callable[..., ShopHandle]) -> None:
    shop = _shop(make_shop, "node-public", "none")
    gateway = live_gateway()
    rp = node_rp()
    _connect(rp, gateway, shop, "none")
    tokens, _ = _sign_in(rp, gateway, shop)
    assert rp.call("userinfo")["sub"] == tokens["claims"]["sub"]
    refreshed = rp.call("refresh")

    with pytest.raises(RelyingPartyError) as refused:  # RFC 7662 §2.1: public clients may not
        rp.call("introspect", token=refreshed["access_token"])
    assert refused.value.details.get("error") == "invalid_client", refused.value.details

    rp.call("revoke", token=refreshed["refresh_token"])
    with pytest.raises(RelyingPartyError) as refused:
        rp.call("refresh", refresh_token=refreshed["refresh_token"])
    assert refused.value.details["error"] == "invalid_grant"
