"""The shop-facing flows, as a shop and a person's browser drive them, against either server.

:class:`Target` is one server seen from outside: discovery, a person's sign-in, the token,
refresh, userinfo and introspection calls. The two servers differ only in how a person signs
in (the gateway brokers the demo upstream provider and shows its consent page once; the peer's
interaction step logs in the ``login_hint`` account and consents automatically), so that part
is a method each subclass implements.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2 as httpx
from joserfc import jwe
from joserfc.jwk import ECKey

from bench.browser import FORM_HEADERS, Browser, FlowError, StepObserver, checkboxes
from bench.workspace import JWE_ALG, JWE_ENC, ClientCredentials

_DEMO_START = re.compile(r'href="(/upstream/demo/start\?[^"]+)"')


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    verifier: str


@dataclass(frozen=True, slots=True)
class Tokens:
    access: str
    refresh: str | None


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Target:
    """A server under test, driven over HTTP by shops and browsers."""

    name = "target"

    def __init__(self, base_url: str, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.metadata: dict[str, Any] = {}

    async def discover(self) -> None:
        response = await self.http.get(f"{self.base_url}/.well-known/openid-configuration")
        if response.status_code != 200:
            raise FlowError(f"{self.name}: discovery answered {response.status_code}")
        self.metadata = response.json()

    def endpoint(self, name: str) -> str:
        return str(self.metadata[f"{name}_endpoint"])

    def browser(self, observer: StepObserver | None = None) -> Browser:
        return Browser(self.http, self.base_url, observer)

    # -- authorization ------------------------------------------------------------------

    def authorize_url(self, client: ClientCredentials, person: str) -> tuple[str, str, str]:
        """The shop's authorization request: (URL, state, PKCE verifier)."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(12)
        params = {
            "response_type": "code", "client_id": client.client_id, "redirect_uri": client.redirect_uri,
            "scope": client.scope, "state": state, "nonce": secrets.token_urlsafe(12),
            "code_challenge": challenge, "code_challenge_method": "S256",
        }
        params.update(self.extra_authorize_params(person))
        return f"{self.endpoint('authorization')}?{urlencode(params)}", state, verifier

    def extra_authorize_params(self, person: str) -> dict[str, str]:
        return {}

    async def walk_sign_in(self, browser: Browser, first: httpx.Response, person: str) -> httpx.Response:
        """From the answer to the authorization request to the redirect back to the shop."""
        raise NotImplementedError

    def _code_from(self, response: httpx.Response, client: ClientCredentials, state: str) -> str:
        location = response.headers.get("location", "")
        if response.status_code not in (302, 303) or not location.startswith(client.redirect_uri):
            snippet = re.sub(r"\s+", " ", response.text[:160])
            raise FlowError(f"{self.name}: sign-in ended with HTTP {response.status_code} {snippet}")
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        if "code" not in query:
            raise FlowError(f"{self.name}: redirect without code ({query.get('error', '?')})")
        if query.get("state") != state:
            raise FlowError(f"{self.name}: state mismatch")
        if query.get("iss", self.base_url) != self.base_url:  # RFC 9207
            raise FlowError(f"{self.name}: iss mismatch")
        return query["code"]

    async def sign_in(self, browser: Browser, client: ClientCredentials, person: str) -> Code:
        """A whole sign-in in ``browser`` (which may already hold a session): a fresh code."""
        url, state, verifier = self.authorize_url(client, person)
        first = await browser.follow(url)
        final = await self.walk_sign_in(browser, first, person)
        return Code(self._code_from(final, client, state), verifier)

    # -- the shop's back channel --------------------------------------------------------

    async def exchange(self, client: ClientCredentials, code: Code) -> Tokens:
        data = {"grant_type": "authorization_code", "code": code.code, "redirect_uri": client.redirect_uri,
                "code_verifier": code.verifier}
        return await self._token(client, data, "token")

    async def refresh(self, client: ClientCredentials, refresh_token: str) -> Tokens:
        return await self._token(client, {"grant_type": "refresh_token", "refresh_token": refresh_token},
                                 "refresh")

    async def _token(self, client: ClientCredentials, data: dict[str, str], what: str) -> Tokens:
        response = await self.http.post(self.endpoint("token"), content=urlencode(data),
                                        headers=FORM_HEADERS, auth=(client.client_id, client.secret))
        if response.status_code != 200:
            raise FlowError(f"{self.name} {what}: HTTP {response.status_code} {response.text[:120]}")
        body = response.json()
        if "access_token" not in body:
            raise FlowError(f"{self.name} {what}: no access_token")
        return Tokens(body["access_token"], body.get("refresh_token"))

    async def userinfo(self, access_token: str) -> httpx.Response:
        response = await self.http.get(self.endpoint("userinfo"),
                                       headers={"authorization": f"Bearer {access_token}"})
        if response.status_code != 200:
            raise FlowError(f"{self.name} userinfo: HTTP {response.status_code} {response.text[:120]}")
        return response

    async def introspect(self, client: ClientCredentials, token: str) -> dict[str, Any]:
        form = urlencode({"token": token, "token_type_hint": "access_token"})
        response = await self.http.post(self.endpoint("introspection"), content=form, headers=FORM_HEADERS,
                                        auth=(client.client_id, client.secret))
        if response.status_code != 200:
            raise FlowError(f"{self.name} introspection: HTTP {response.status_code} {response.text[:120]}")
        body: dict[str, Any] = response.json()
        if body.get("active") is not True:
            raise FlowError(f"{self.name} introspection: token not active")
        return body


class GatewayTarget(Target):
    name = "gateway"

    async def walk_sign_in(self, browser: Browser, first: httpx.Response, person: str) -> httpx.Response:
        page = first
        if page.status_code == 200 and "/upstream/demo/start" in page.text:
            start = _DEMO_START.search(page.text)
            if start is None:
                raise FlowError("gateway: no demo provider on the sign-in page")
            page = await browser.follow(html.unescape(start.group(1)))
            page = await browser.submit(page, [("person", person)])
        if page.status_code == 200 and 'action="/consent"' in page.text:
            page = await browser.submit(page, [*checkboxes(page), ("decision", "allow")])
        return page


class PeerTarget(Target):
    """node oidc-provider; its interaction route signs in the ``login_hint`` account."""

    name = "oidc-provider"

    def extra_authorize_params(self, person: str) -> dict[str, str]:
        return {"login_hint": person}

    async def walk_sign_in(self, browser: Browser, first: httpx.Response, person: str) -> httpx.Response:
        return first  # the automatic interaction is only redirects, already followed


def check_encrypted_userinfo(response: httpx.Response, private_jwk: dict[str, Any]) -> dict[str, Any]:
    """Decrypt one JWE userinfo response with the shop's key: the benchmark measures real work."""
    if not response.headers.get("content-type", "").startswith("application/jwt"):
        raise FlowError("encrypted userinfo: not application/jwt")
    key = ECKey.import_key(private_jwk)
    decrypted = jwe.decrypt_compact(response.content, key, algorithms=[JWE_ALG, JWE_ENC])

    payload = decrypted.plaintext or b""
    if decrypted.headers().get("cty") == "JWT":  # nested: signed, then encrypted
        payload = base64.urlsafe_b64decode(payload.split(b".")[1] + b"==")
    claims: dict[str, Any] = json.loads(payload)
    if "sub" not in claims:
        raise FlowError("encrypted userinfo without sub")
    return claims
