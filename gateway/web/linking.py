"""Linking one more provider to the signed-in person: an explicit step, never a guess.

``GET /upstream/link`` lists the providers; choosing one (a POST with a CSRF token) sends
the person to sign in there, and the callback (``gateway/web/pages.py``) attaches that
provider's account to the person who started, if it does not already belong to someone
else. The gateway never links accounts because an e-mail address or phone number
matches. The person must have signed in within :data:`LINK_MAX_AGE` seconds, so a
browser left signed in cannot be used to attach someone else's account.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import BrowserError
from gateway.oidc import bridge
from gateway.oidc.endpoints import COOKIE_OPTIONS, browser_id, outcome_response
from gateway.oidc.flow import AuthorizationFlow
from gateway.oidc.sessions import BROWSER_COOKIE, SESSION_COOKIE, Person
from gateway.store.limits import account_writes, spend
from gateway.upstream import UpstreamError
from gateway.web.csrf import csrf_token
from gateway.web.forms import posted_form
from gateway.web.pages import WebContext, provider_choices

LINK_MAX_AGE = 600


def build_linking_router(web: WebContext, flow: AuthorizationFlow) -> APIRouter:
    router = APIRouter()
    ctx = web.provider

    async def signed_in(request: Request) -> Person | None:
        return await bridge.in_worker(ctx.sessions.find, request.cookies.get(SESSION_COOKIE))

    async def sign_in_again(request: Request) -> Response:
        browser, set_browser = browser_id(request)
        return outcome_response(flow.start_account_sign_in(browser), browser, set_browser)

    @router.get("/upstream/link")
    async def link_page(request: Request) -> Response:
        person = await signed_in(request)
        if person is None:
            return await sign_in_again(request)
        browser, set_browser = browser_id(request)
        origins = []
        for connector in web.logins.connectors.values():
            try:
                origins.append(await connector.authorization_origin())
            except UpstreamError:  # its discovery fails: its button fails too, and says so
                continue
        response = web.renderer.page(request, "login.html", mode="link", form_action=origins,
                                     providers=provider_choices(web, request, person.provider),
                                     csrf=csrf_token(web.csrf_secret, browser, "link"))
        if set_browser:
            response.set_cookie(BROWSER_COOKIE, browser, **COOKIE_OPTIONS)
        return response

    @router.post("/upstream/{provider_id}/link")
    async def link_start(request: Request, provider_id: str) -> Response:
        await posted_form(request, web.csrf_secret, "link", ctx.settings.max_body_bytes)
        browser = request.cookies.get(BROWSER_COOKIE) or ""
        if provider_id not in web.logins.connectors:
            raise BrowserError("invalid_request", "Unknown sign-in provider.", 404)
        person = await signed_in(request)
        if person is None or time.time() - person.signed_in_at > LINK_MAX_AGE:
            return await sign_in_again(request)  # a recent sign-in proves who is linking
        await bridge.in_worker(spend, ctx.settings, ctx.store.limits, account_writes(ctx.settings), person.id)
        try:
            location = await web.logins.start_link(provider_id, person.id, browser)
        except UpstreamError:
            raise BrowserError("temporarily_unavailable",
                               "The provider cannot be reached. Try again later.", 502) from None
        return bridge.redirect(location)

    return router
