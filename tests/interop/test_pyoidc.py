"""The gateway driven by ``oic`` (pyoidc, CZ-NIC), a certified Python relying party library
that shares nothing with authlib: its own messages, its own JOSE (pyjwkest), requests.

(Beware the look-alike PyPI name ``pyoidc``: that is an unrelated package. The library is
published as ``oic``.) As with openid-client, the checks are the library's own: discovery
and issuer, JWKS, authorization response (``iss`` per RFC 9207), ID token signature and
claims, at_hash, nonce, userinfo ``sub`` against the ID token.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc.jwk import RSAKey
from oic.extension.client import Client as ExtensionClient
from oic.oauth2.message import ErrorResponse
from oic.oic import Client
from oic.oic.message import (
    AccessTokenResponse,
    AuthorizationErrorResponse,
    AuthorizationResponse,
    OpenIDSchema,
    RefreshAccessTokenRequest,
    RegistrationResponse,
)
from oic.utils.authn.client import CLIENT_AUTHN_METHOD
from oic.utils.keyio import KeyBundle

from tests.conftest import ShopHandle
from tests.interop.harness import LiveGateway, authorize_in_browser

SCOPE = ["openid", "profile", "email", "phone"]


class OicShop:
    """A shop's server using oic: static registration, discovery, then the flows."""

    def __init__(self, gateway: LiveGateway, shop: ShopHandle, auth: str,
                 private_jwk: dict[str, Any] | None = None) -> None:
        self.gateway = gateway
        self.shop = shop
        self.auth = "" if auth == "none" else auth  # oic: no authn_method for public clients
        self.client = Client(client_authn_method=CLIENT_AUTHN_METHOD)
        self.metadata = self.client.provider_config(gateway.issuer)  # checks issuer, loads JWKS
        registration: dict[str, Any] = {
            "client_id": shop.client_id, "redirect_uris": [shop.redirect_uri],
            "token_endpoint_auth_method": auth,
        }
        if shop.secret:
            registration["client_secret"] = shop.secret
        self.client.store_registration_info(RegistrationResponse(**registration))
        self.client.redirect_uris = [shop.redirect_uri]
        if private_jwk is not None:
            self.client.keyjar.add_kb("", KeyBundle([private_jwk]))
        # Revocation and introspection live in oic's extension client; it shares the
        # registration, the provider metadata and the keys.
        self.extension = ExtensionClient(client_id=shop.client_id, client_authn_method=CLIENT_AUTHN_METHOD,
                                         keyjar=self.client.keyjar)
        self.extension.client_secret = shop.secret
        self.extension.handle_provider_config(self.metadata, gateway.issuer, keys=False)
        self.state = ""

    def authorization_url(self, **extra: Any) -> str:
        self.state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        pkce, self.verifier = self.client.add_code_challenge()  # S256
        args = {"client_id": self.shop.client_id, "response_type": "code", "scope": SCOPE,
                "redirect_uri": self.shop.redirect_uri, "state": self.state, "nonce": nonce,
                **pkce, **extra}
        url, _, _, _ = self.client.authorization_request_info(request_args=args)
        return str(url)

    def sign_in(self, person: str = "li-lei", **extra: Any) -> AccessTokenResponse:
        callback = authorize_in_browser(self.gateway.browser(), self.authorization_url(**extra), person)
        return self.code_grant(callback)

    def code_grant(self, callback: str) -> AccessTokenResponse:
        response = self.client.parse_response(AuthorizationResponse, info=urlsplit(callback).query,
                                              sformat="urlencoded")
        if isinstance(response, AuthorizationErrorResponse):
            return response  # type: ignore[no-any-return]
        assert response["state"] == self.state  # the RP's own check, as oic's Consumer does
        return self.client.do_access_token_request(  # type: ignore[no-any-return]
            state=self.state, authn_method=self.auth,
            request_args={"code": response["code"], "code_verifier": self.verifier,
                          "redirect_uri": self.shop.redirect_uri})

    def userinfo(self, method: str = "GET") -> OpenIDSchema:
        return self.client.do_user_info_request(method=method, state=self.state)

    def refresh(self) -> AccessTokenResponse:
        # oic's do_access_token_refresh drops its own authn_endpoint argument on the way
        # to private_key_jwt; pass it here, the rest is oic's usual path.
        token = self.client.get_token(also_expired=True, state=self.state)
        url, body, http_args, _ = self.client.request_info(
            RefreshAccessTokenRequest, method="POST", token=token, authn_method=self.auth,
            authn_endpoint="refresh")
        response = self.client.request_and_return(url, AccessTokenResponse, "POST", body, "json",
                                                  state=self.state, http_args=http_args)
        self.client.get_grant(self.state).delete_token(token)
        return response  # type: ignore[no-any-return]

    def introspect(self, token: str, hint: str = "access_token") -> Any:
        return self.extension.do_token_introspection(
            request_args={"token": token, "token_type_hint": hint}, authn_method=self.auth,
            authn_endpoint="introspection")

    def revoke(self, token: str, hint: str = "refresh_token") -> Any:
        return self.extension.do_token_revocation(
            request_args={"token": token, "token_type_hint": hint}, authn_method=self.auth,
            authn_endpoint="revocation")

    def end_session_url(self, **args: str) -> str:
        url, _, _, _ = self.client.request_info(
            self.client.message_factory.get_request_type("endsession_endpoint"), method="GET",
            request_args=args, state=self.state)
        return str(url)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@pytest.fixture
def oic_shop(live_gateway: Callable[[], LiveGateway],
             make_shop: Callable[..., ShopHandle]) -> Iterator[Callable[..., OicShop]]:
    """Declare a shop, start the gateway, and connect an oic client to it."""
    def connect(client_id: str = "oic-basic", auth: str = "client_secret_basic",
                private_jwk: dict[str, Any] | None = None, **fields: Any) -> OicShop:
        host = f"{client_id}.shop.example"
        shop = make_shop(client_id, token_endpoint_auth_method=auth,
                         redirect_uris=[f"https://{host}/callback"],
                         post_logout_redirect_uris=[f"https://{host}/signed-out"], **fields)
        return OicShop(live_gateway(), shop, auth, private_jwk)

    yield connect


def test_discovery_and_keys_are_accepted(oic_shop: Callable[..., OicShop]) -> None:
    rp = oic_shop()
    assert rp.metadata["issuer"] == rp.gateway.issuer
    assert rp.client.keyjar.get_issuer_keys(rp.gateway.issuer)  # the JWKS parsed


def test_code_flow_with_pkce_and_id_token_validation(oic_shop: Callable[..., OicShop]) -> None:
    rp = oic_shop()
    tokens = rp.sign_in()
    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    id_token = tokens["id_token"]  # verified by oic: signature, iss, aud, exp, iat, at_hash, nonce
    assert id_token["iss"] == rp.gateway.issuer
    assert id_token["aud"] == [rp.shop.client_id]
    assert id_token["nonce"] == rp.client.state2nonce[rp.state]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_userinfo_by_header_and_by_form_body(oic_shop: Callable[..., OicShop], method: str) -> None:
    rp = oic_shop()
    tokens = rp.sign_in(person="han-meimei")
    userinfo = rp.userinfo(method)  # oic checks sub against the ID token's
    assert isinstance(userinfo, OpenIDSchema), userinfo.to_dict()
    assert userinfo["sub"] == tokens["id_token"]["sub"]
    assert userinfo["email"] == "meimei@example.com"


def test_offline_access_is_ignored(oic_shop: Callable[..., OicShop]) -> None:
    rp = oic_shop()
    tokens = rp.sign_in(scope=["openid", "email", "offline_access"])
    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    assert tokens["scope"] == ["openid", "email"] and tokens["refresh_token"]


def test_refresh_introspection_and_revocation(oic_shop: Callable[..., OicShop]) -> None:
    rp = oic_shop()
    tokens = rp.sign_in()
    refreshed = rp.refresh()
    assert isinstance(refreshed, AccessTokenResponse), refreshed.to_dict()
    assert refreshed["access_token"] != tokens["access_token"]
    introspection = rp.introspect(refreshed["access_token"])
    assert introspection["active"] is True
    assert introspection["sub"] == tokens["id_token"]["sub"]
    assert rp.revoke(refreshed["refresh_token"]) == 200
    assert rp.introspect(refreshed["access_token"]).to_dict() == {"active": False}


def test_rp_initiated_logout(oic_shop: Callable[..., OicShop]) -> None:
    rp = oic_shop()
    browser = rp.gateway.browser()
    tokens = rp.code_grant(authorize_in_browser(browser, rp.authorization_url()))
    post_logout = f"https://{rp.shop.client_id}.shop.example/signed-out"
    url = rp.end_session_url(post_logout_redirect_uri=post_logout, state="bye",
                             id_token_hint=tokens["id_token_jwt"])
    assert url.startswith(f"{rp.gateway.issuer}/logout?")
    response = browser.follow(url)
    assert response.status_code == 302
    assert response.headers["location"] == f"{post_logout}?state=bye"
    answer = browser.follow(rp.authorization_url(prompt="none"))
    error = rp.code_grant(answer.headers["location"])
    assert isinstance(error, AuthorizationErrorResponse)
    assert error["error"] == "login_required"


def test_private_key_jwt_client(oic_shop: Callable[..., OicShop]) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "oic-rsa"}, private=True)
    # oic 1.7 addresses its assertions to the token endpoint and makes them live 10 minutes:
    # the shop opts in to that (docs/shops.md, legacy_assertion_audience).
    rp = oic_shop("oic-jwt", "private_key_jwt", private_jwk=key.as_dict(private=True),
                  jwks={"keys": [key.as_dict(private=False)]}, legacy_assertion_audience=True)
    tokens = rp.sign_in()
    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    refreshed = rp.refresh()
    assert isinstance(refreshed, AccessTokenResponse), refreshed.to_dict()
    assert rp.introspect(refreshed["access_token"])["active"] is True
    assert rp.revoke(refreshed["refresh_token"]) == 200
    assert rp.introspect(refreshed["access_token"])["active"] is False


def test_public_client(oic_shop: Callable[..., OicShop]) -> None:
    rp = oic_shop("oic-public", "none")
    tokens = rp.sign_in()
    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    assert rp.userinfo()["sub"] == tokens["id_token"]["sub"]
    refreshed = rp.refresh()
    assert isinstance(refreshed, AccessTokenResponse), refreshed.to_dict()
    refused = rp.introspect(refreshed["access_token"])
    assert isinstance(refused, ErrorResponse) and refused["error"] == "invalid_client"
    assert rp.revoke(refreshed["refresh_token"]) == 200
    again = rp.refresh()
    assert isinstance(again, ErrorResponse) and again["error"] == "invalid_grant"
