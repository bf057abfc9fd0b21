"""A live gateway on a loopback port, and authlib's OAuth 2 client as the shop."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator

import httpx2
import pytest
import uvicorn
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway.app import create_app
from gateway.config import Settings
from gateway.store import Store
from tests.conftest import Browser, ShopHandle, checkboxes
from tests.live import free_port, serve_in_thread, stop


@pytest.fixture
def start_gateway(make_settings: Callable[..., Settings], store: Store) -> Iterator[Callable[[], str]]:
    """Start the gateway on a free loopback port (after the test has declared its shops)."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start() -> str:
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        running.append(serve_in_thread(create_app(make_settings(issuer=issuer), store=store), port))
        return issuer

    yield start
    for server, thread in running:
        stop(server, thread)


def test_full_flow_with_authlib_client(start_gateway: Callable[[], str],
                                       make_shop: Callable[..., ShopHandle]) -> None:
    shop = make_shop("shop-e2e", redirect_uris=["http://127.0.0.1:9/callback"])
    issuer = start_gateway()

    metadata = httpx2.get(f"{issuer}/.well-known/openid-configuration").json()
    assert metadata["issuer"] == issuer
    oauth = OAuth2Client(client_id=shop.client_id, client_secret=shop.secret,
                         scope="openid profile email", redirect_uri=shop.redirect_uri,
                         code_challenge_method="S256",
                         token_endpoint_auth_method="client_secret_basic")
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(12)
    url, state_value = oauth.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce)

    with httpx2.Client(base_url=issuer, follow_redirects=False) as http:
        browser = Browser(http, origin=issuer)
        page = browser.follow(url)
        start = next(p for p in page.text.split('"') if p.startswith("/upstream/demo/start"))
        page = browser.follow(start.replace("&amp;", "&"))
        page = browser.submit(page, person="han-meimei")
        final = browser.submit(page, checkboxes(page), decision="allow")
    assert final.status_code == 302
    callback = final.headers["location"]
    assert f"iss={issuer}".replace(":", "%3A").replace("/", "%2F") in callback

    token = oauth.fetch_token(metadata["token_endpoint"], authorization_response=callback,
                              code_verifier=verifier, state=state_value)
    keys = KeySet.import_key_set(httpx2.get(metadata["jwks_uri"]).json())
    id_token = jwt.decode(token["id_token"], keys, algorithms=["ES256"])
    claims = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer}, aud={"essential": True, "value": shop.client_id},
        nonce={"essential": True, "value": nonce}, exp={"essential": True}, sub={"essential": True},
    )
    claims.validate(id_token.claims)
    digest = hashlib.sha256(token["access_token"].encode()).digest()[:16]
    assert id_token.claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    userinfo = oauth.get(metadata["userinfo_endpoint"]).json()
    assert userinfo["sub"] == id_token.claims["sub"]
    assert userinfo["email"] == "meimei@example.com"

    refreshed = oauth.refresh_token(metadata["token_endpoint"])
    assert refreshed["access_token"] != token["access_token"]

    introspection = oauth.introspect_token(metadata["introspection_endpoint"],
                                           token=refreshed["access_token"]).json()
    assert introspection["active"] is True and introspection["sub"] == userinfo["sub"]

    assert oauth.revoke_token(metadata["revocation_endpoint"],
                              token=refreshed["refresh_token"]).status_code == 200
    after = oauth.introspect_token(metadata["introspection_endpoint"],
                                   token=refreshed["access_token"]).json()
    assert after == {"active": False}
