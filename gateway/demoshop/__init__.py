"""A small demo shop: a relying party built with authlib's client, as a real shop would be.

It runs only under ``gateway demo``, keeps its sessions in memory, and shows exactly what it
received from the gateway after sign-in. It talks to the gateway over HTTP only.
"""

from __future__ import annotations

import html
import json
import secrets
from typing import Any
from urllib.parse import urlencode

from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

DEMO_SHOP_ID = "demo-shop"
COOKIE = "demo_shop_session"
# Fields no standard scope covers are asked for with the OIDC claims parameter (§5.5).
EXTRA_CLAIMS = json.dumps({"userinfo": {"id_number": None, "location": None}})


def _page(body: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>Demo shop</title>"
        "<body style='font-family:system-ui;max-width:40rem;margin:2rem auto;padding:0 1rem'>"
        f"<h1>Demo shop 演示商店</h1>{body}</body></html>"
    )


def create_demo_shop(*, issuer: str, base_url: str, client_secret: str) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    sessions: dict[str, dict[str, Any]] = {}
    redirect_uri = f"{base_url}/callback"

    def client() -> AsyncOAuth2Client:
        return AsyncOAuth2Client(client_id=DEMO_SHOP_ID, client_secret=client_secret,
                                 scope="openid profile email phone address",
                                 redirect_uri=redirect_uri,
                                 token_endpoint_auth_method="client_secret_basic")

    @app.get("/")
    async def home(request: Request) -> Response:
        session = sessions.get(request.cookies.get(COOKIE, ""), {})
        if "userinfo" not in session:
            return _page("<p>Not signed in.</p>"
                         "<p><a href='/login'>Sign in with Consent Gateway</a></p>")
        claims = html.escape(json.dumps(session["userinfo"], ensure_ascii=False, indent=2))
        id_claims = html.escape(json.dumps(session["id_token"], ensure_ascii=False, indent=2))
        logout = f"{issuer}/logout?" + urlencode({
            "id_token_hint": session["raw_id_token"], "client_id": DEMO_SHOP_ID,
            "post_logout_redirect_uri": f"{base_url}/"})
        return _page(f"<h2>What the shop received (userinfo)</h2><pre>{claims}</pre>"
                     f"<h2>ID token claims</h2><pre>{id_claims}</pre>"
                     "<p><a href='/refresh'>Fetch userinfo again</a> · "
                     f"<a href='{html.escape(logout)}'>Sign out</a></p>")

    @app.get("/login")
    async def login() -> Response:
        sid = secrets.token_urlsafe(16)
        verifier = secrets.token_urlsafe(48)
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        sessions[sid] = {"state": state, "nonce": nonce, "verifier": verifier}
        async with client() as oauth:
            url, _ = oauth.create_authorization_url(
                f"{issuer}/authorize", state=state, nonce=nonce, claims=EXTRA_CLAIMS,
                code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256")
        response = RedirectResponse(url, status_code=302)
        response.set_cookie(COOKIE, sid, httponly=True, samesite="lax")
        return response

    @app.get("/callback")
    async def callback(request: Request) -> Response:
        session = sessions.get(request.cookies.get(COOKIE, ""))
        query = request.query_params
        if not session or query.get("state") != session["state"] or query.get("iss") != issuer:
            return _page("<p>State or issuer mismatch.</p>")
        if "error" in query:
            error = html.escape(query["error"])
            return _page(f"<p>Sign-in ended: <code>{error}</code></p><p><a href='/'>Back</a></p>")
        async with client() as oauth:
            token = await oauth.fetch_token(f"{issuer}/token", code=query.get("code"),
                                            code_verifier=session["verifier"])
            keys = KeySet.import_key_set((await oauth.get(f"{issuer}/jwks")).json())
            id_token = jwt.decode(token["id_token"], keys, algorithms=["ES256", "RS256"])
            registry = jwt.JWTClaimsRegistry(iss={"essential": True, "value": issuer},
                                             aud={"essential": True, "value": DEMO_SHOP_ID},
                                             nonce={"essential": True, "value": session["nonce"]})
            registry.validate(id_token.claims)
            userinfo = (await oauth.get(f"{issuer}/userinfo")).json()
        session.update(token=token, id_token=id_token.claims, raw_id_token=token["id_token"],
                       userinfo=userinfo)
        return RedirectResponse("/", status_code=303)

    @app.get("/refresh")
    async def refresh(request: Request) -> Response:
        session = sessions.get(request.cookies.get(COOKIE, ""), {})
        if "token" not in session:
            return RedirectResponse("/", status_code=303)
        async with AsyncOAuth2Client(token=session["token"]) as oauth:
            reply = await oauth.get(f"{issuer}/userinfo")
        if reply.status_code != 200:
            session.pop("userinfo", None)
            return _page(f"<p>The gateway refused: HTTP {reply.status_code}.</p><p><a href='/'>Back</a></p>")
        session["userinfo"] = reply.json()
        return RedirectResponse("/", status_code=303)

    return app
