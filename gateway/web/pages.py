"""The person's pages: provider chooser, upstream callback, consent, logout, demo sign-in."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc6749 import AccessDeniedError, OAuth2Error
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.audit.relay import stage
from gateway.consent import ConsentRecord, Grant, KeptReceipt, keep_receipt
from gateway.errors import BrowserError
from gateway.oidc import bridge
from gateway.oidc.context import ProviderContext
from gateway.oidc.endpoints import COOKIE_OPTIONS, browser_id, outcome_response
from gateway.oidc.flow import AuthorizationFlow, ConsentQuestion, Redirect, TemporarilyUnavailableError
from gateway.oidc.server import ProviderRequest, ProviderServer
from gateway.oidc.sessions import SESSION_COOKIE, Person
from gateway.store.commits import Staged
from gateway.upstream import UpstreamError
from gateway.upstream.base import ProviderUnavailableError, origin_of
from gateway.upstream.demo import DEMO_PEOPLE, DemoProvider, find_demo_person
from gateway.upstream.logins import UpstreamLogins
from gateway.web.consent_view import consent_view, granted_items
from gateway.web.csrf import csrf_token
from gateway.web.forms import check_csrf, posted_form, read_page_form
from gateway.web.rendering import Renderer

log = logging.getLogger(__name__)

EXPIRED = "This sign-in has expired or belongs to another browser. Start again from the shop."
# What the person can do after an upstream failure (retryable: the provider is down or slow).
_UPSTREAM_HINTS = {
    True: {"en": "The provider is not answering properly right now. Please try again in a few "
                 "minutes.", "zh-CN": "第三方暂时无法正常响应，请稍后几分钟再试。"},
    False: {"en": "The sign-in was refused or could not be verified. Please start again from the "
                  "shop.", "zh-CN": "登录被拒绝或无法验证，请返回商店重新开始。"},
}


@dataclass(slots=True)
class WebContext:
    provider: ProviderContext
    server: ProviderServer
    flow: AuthorizationFlow
    logins: UpstreamLogins
    renderer: Renderer
    csrf_secret: bytes
    demo: DemoProvider | None


def provider_choices(web: WebContext, request: Request,
                     leave_out: str = "") -> list[dict[str, str | bool]]:
    """The providers the sign-in page lists for this browser, named in its language; one
    whose circuit is open is listed as unavailable for the moment (not as a link)."""
    language = web.renderer.language(request)
    agent = request.headers.get("user-agent", "")
    return [{"id": c.provider_id, "name": c.name_in(language), "logo": c.logo,
             "available": c.available()}
            for c in web.logins.connectors.values()
            if c.provider_id != leave_out and c.offered_to(agent)]


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


def build_pages_router(web: WebContext) -> APIRouter:  # noqa: C901 - one closure per page
    router = APIRouter()
    ctx = web.provider
    limit = ctx.settings.max_body_bytes

    async def form_pairs(request: Request, purpose: str) -> list[tuple[str, str]]:
        return await posted_form(request, web.csrf_secret, purpose, limit)

    async def form_of(request: Request, purpose: str) -> dict[str, str]:
        return dict(await form_pairs(request, purpose))

    def token_for(request: Request, purpose: str) -> str:
        browser, _ = browser_id(request)
        return csrf_token(web.csrf_secret, browser, purpose)

    @router.get("/login")
    async def login(request: Request) -> Response:
        browser, _ = browser_id(request)
        request_id = request.query_params.get("request", "")
        pending = await bridge.in_worker(ctx.pending.find, request_id, browser)
        if pending is None:
            raise BrowserError("invalid_request", EXPIRED)
        shop = ctx.shops.get(pending.client_id)
        return web.renderer.page(
            request, "login.html", request_id=request_id,
            shop_name=shop.config.name if shop else "",
            providers=provider_choices(web, request),
        )

    @router.get("/upstream/{provider_id}/start")
    async def upstream_start(request: Request, provider_id: str) -> Response:
        browser, _ = browser_id(request)
        request_id = request.query_params.get("request", "")
        if provider_id not in web.logins.connectors:
            raise BrowserError("invalid_request", "Unknown sign-in provider.", 404)
        pending = await bridge.in_worker(ctx.pending.find, request_id, browser)
        if pending is None:
            raise BrowserError("invalid_request", EXPIRED)
        try:
            # A coroutine on async HTTP with a total deadline: no worker thread waits on it.
            location = await web.logins.start(provider_id, request_id, browser)
        except UpstreamError as error:  # e.g. the provider's discovery document is unreachable
            error.request_id = request_id
            return await _upstream_failed(request, error, browser)
        return bridge.redirect(location)

    @router.get("/upstream/{provider_id}/callback")
    async def upstream_callback(request: Request, provider_id: str) -> Response:
        browser, _ = browser_id(request)
        if provider_id not in web.logins.connectors:
            raise BrowserError("invalid_request", "Unknown sign-in provider.", 404)
        try:
            finished = await web.logins.finish(provider_id, dict(request.query_params), browser)
        except UpstreamError as error:
            return await _upstream_failed(request, error, browser)
        if finished.link_person is not None:  # the explicit linking step (docs/providers.md)
            person = await bridge.in_worker(ctx.sessions.find, request.cookies.get(SESSION_COOKIE))
            if person is None or person.id != finished.link_person:
                raise BrowserError("invalid_request", EXPIRED)
            linked = await bridge.in_worker(ctx.identities.link, person.id, finished.identity)
            log.info("provider link", extra={"provider": provider_id, "linked": linked})
            linker = person.id
            await bridge.in_worker(lambda: ctx.record(
                "identity_linked", actor_type="person", actor_id=linker, person=linker,
                outcome="success" if linked else "denied"))
            connector = web.logins.connectors[provider_id]
            return web.renderer.page(request, "login.html", mode="linked" if linked else "link_taken",
                                     provider_name=connector.name_in(web.renderer.language(request)),
                                     status_code=200 if linked else 409)
        person_id = await bridge.in_worker(ctx.identities.resolve, finished.identity)
        await bridge.in_worker(lambda: ctx.record("sign_in", actor_type="person", actor_id=person_id,
                                                  person=person_id))
        now = time.time()
        person = Person(person_id, int(now), list(finished.identity.amr), provider_id, now)
        await bridge.in_worker(ctx.sessions.end, request.cookies.get(SESSION_COOKIE))
        session_id = await bridge.in_worker(ctx.sessions.start, person)
        response = bridge.redirect(f"/authorize/continue?{urlencode({'request': finished.request_id})}")
        response.set_cookie(SESSION_COOKIE, session_id, max_age=ctx.settings.session_ttl,
                            **COOKIE_OPTIONS)
        return response

    async def _upstream_failed(request: Request, error: UpstreamError, browser: str) -> Response:
        log.warning("upstream sign-in failed", extra={"reason": error.reason,
                                                      "retryable": error.retryable})
        back_url = None
        if error.request_id:
            kind: type[OAuth2Error] = (
                TemporarilyUnavailableError if error.retryable else AccessDeniedError
            )
            outcome = await bridge.in_worker(web.flow.deny, error.request_id, None, browser, kind)
            back_url = outcome.location if isinstance(outcome, Redirect) else None
        return web.renderer.page(request, "error.html", status_code=502 if error.retryable else 400,
                                 error="temporarily_unavailable" if error.retryable else "access_denied",
                                 message_key=("provider_unavailable"
                                              if isinstance(error, ProviderUnavailableError)
                                              else "upstream_failed"),
                                 message=_UPSTREAM_HINTS[error.retryable][web.renderer.language(request)],
                                 back_url=back_url)

    async def consent_question(request: Request, request_id: str) -> tuple[Person, ConsentQuestion]:
        browser, _ = browser_id(request)
        person = await bridge.in_worker(ctx.sessions.find, request.cookies.get(SESSION_COOKIE))
        question = None
        if person is not None:
            question = await bridge.in_worker(web.flow.consent_question, request_id, person, browser)
        if person is None or question is None:
            raise BrowserError("invalid_request", EXPIRED)
        return person, question

    @router.get("/consent")
    async def consent_page(request: Request) -> Response:
        request_id = request.query_params.get("request", "")
        _, question = await consent_question(request, request_id)
        shop = question.shop
        language = web.renderer.language(request)
        return web.renderer.page(
            request, "consent.html", request_id=request_id,
            # Allow and deny both end at the shop's redirect URI, after /authorize/continue.
            form_action=[origin_of(uri) for uri in shop.config.redirect_uris],
            shop_name=(shop.config.name_zh or shop.config.name) if language == "zh-CN" else shop.config.name,
            purposes=consent_view(question.items, shop.config.policy, ctx.catalogue, language),
            csrf=token_for(request, "consent"),
        )

    @router.post("/consent")
    async def consent_submit(request: Request) -> Response:
        pairs = await form_pairs(request, "consent")
        fields = dict(pairs)
        browser, set_browser = browser_id(request)
        request_id = fields.get("request", "")
        person, question = await consent_question(request, request_id)
        if fields.get("decision") != "allow":
            outcome = await bridge.in_worker(web.flow.deny, request_id, person, browser)
            return outcome_response(outcome, browser, set_browser)
        shop = question.shop
        granted = granted_items(question.items, pairs)
        language = web.renderer.language(request)

        def make_receipt(grants: list[Grant], timestamp: int) -> KeptReceipt:
            # Kept by digest; signed when the person asks for it (AccountService.receipts).
            return keep_receipt(
                issuer=ctx.issuer, shop_id=shop.client_id, shop_name=shop.config.name,
                shop_contact=shop.config.contact, subject=ctx.subject_for(shop, person.id),
                policy=shop.config.policy, catalogue=ctx.catalogue, grants=grants,
                language=language, timestamp=timestamp)

        def describe(_: ConsentRecord, __: list[Grant]) -> list[Staged]:
            # Committed with the consent record in one step (gateway/store/commits.py).
            return [stage(ctx.event(
                "consent_granted", actor_type="person", actor_id=person.id, person=person.id,
                shop=shop.client_id, fields=[f for _, f in granted], purposes=[p for p, _ in granted],
                policy_version=shop.config.policy.version,
                outcome="success" if granted or not question.items else "denied"))]

        def decide() -> None:
            ctx.consents.decide(person.id, shop.client_id, shop.config.policy.version,
                                question.items, granted, make_receipt=make_receipt, describe=describe)
            ctx.relay_staged(person.id)

        await bridge.in_worker(decide)
        return _see_other(f"/authorize/continue?{urlencode({'request': request_id})}")

    def _hint_names_session(claims: dict[str, Any] | None, session_id: str | None) -> bool:
        if claims is None or not session_id:
            return claims is not None
        person = ctx.sessions.find(session_id)
        shop = ctx.shops.get(claims.get("aud") if isinstance(claims.get("aud"), str) else None)
        return bool(person and shop and ctx.subject_for(shop, person.id) == claims.get("sub"))

    @router.api_route("/logout", methods=["GET", "POST"])
    async def logout(request: Request) -> Response:
        # RP-Initiated Logout §2: a shop may send the logout request by GET or by POST. Only
        # the person's answer on our confirmation page (it carries "confirm") needs our CSRF
        # token; a shop's POST is treated exactly like its GET.
        confirmed = False
        if request.method == "POST":
            pairs = await read_page_form(request, limit)
            fields = dict(pairs)
            if "confirm" in fields:
                check_csrf(request, web.csrf_secret, "logout", fields.get("csrf"))
                confirmed = fields["confirm"] == "yes"
            params = [(k, v) for k, v in pairs if k not in ("csrf", "confirm")]
        else:
            params = bridge.query_fields(request)
        oauth_request = ProviderRequest("GET", ctx.endpoint("/logout"), {}, params, [])
        try:
            validated = await bridge.in_worker(
                web.server.validate_endpoint_request, "end_session", oauth_request
            )
        except OAuth2Error as error:
            # RP-Initiated Logout §4: on errors, never redirect.
            raise BrowserError(error.error, error.get_error_description() or "") from None
        session_id = request.cookies.get(SESSION_COOKIE)
        # An ID token of someone else (another person, or another browser's session) proves
        # nothing about this session: ask, like a request without a hint (logout CSRF).
        hint_is_ours = await bridge.in_worker(_hint_names_session, validated.id_token_claims, session_id)
        if (validated.needs_confirmation or not hint_is_ours) and session_id and not confirmed:
            return web.renderer.page(request, "logout.html", params=params, done=False,
                                     csrf=token_for(request, "logout"),
                                     form_action=[origin_of(validated.redirect_uri)]
                                     if validated.redirect_uri else [])
        await bridge.in_worker(ctx.sessions.end, session_id)
        response: Response
        if validated.redirect_uri:
            response = bridge.redirect(validated.redirect_uri)
        else:
            response = web.renderer.page(request, "logout.html", done=True, params=[])
        response.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="lax")
        return response

    if web.demo is not None:
        demo = web.demo
        callback = web.logins.callback_uri("demo")

        @router.get("/demo-idp/authorize")
        async def demo_idp_page(request: Request) -> Response:
            params = bridge.query_fields(request)
            if dict(params).get("redirect_uri") != callback:
                raise BrowserError("invalid_request", "The demo provider serves only this gateway.")
            browser, set_browser = browser_id(request)
            response = web.renderer.page(
                request, "demo_idp.html", people=DEMO_PEOPLE,
                # Its callback goes on to the shop when consent was given before (any shop).
                form_action=[origin_of(uri) for shop in ctx.shops for uri in shop.config.redirect_uris],
                params=[p for p in params if p[0] != "lang"],
                csrf=csrf_token(web.csrf_secret, browser, "demo-idp"),
            )
            if set_browser:
                response.set_cookie("__Host-cg_browser", browser, **COOKIE_OPTIONS)
            return response

        @router.post("/demo-idp/authorize")
        async def demo_idp_submit(request: Request) -> Response:
            fields = await form_of(request, "demo-idp")
            person = find_demo_person(fields.get("person", ""))
            if fields.get("redirect_uri") != callback or person is None:
                raise BrowserError("invalid_request", "Unknown demo person or redirect URI.")
            if not fields.get("code_challenge") or fields.get("code_challenge_method") != "S256":
                raise BrowserError("invalid_request", "The demo provider requires PKCE S256.")
            code = await bridge.in_worker(
                lambda: demo.issue_code(person, redirect_uri=callback,
                                        code_challenge=fields["code_challenge"],
                                        nonce=fields.get("nonce", ""))
            )
            query = urlencode({"code": code, "state": fields.get("state", "")})
            return _see_other(f"{callback}?{query}")

    return router
