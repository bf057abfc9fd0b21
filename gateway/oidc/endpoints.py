"""The shop-facing HTTP endpoints of the OpenID provider."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import BrowserError
from gateway.oidc import bridge
from gateway.oidc.context import ProviderContext
from gateway.oidc.discovery import provider_metadata
from gateway.oidc.flow import AuthorizationFlow, ErrorPage, Outcome
from gateway.oidc.par import push_response
from gateway.oidc.server import ProviderServer
from gateway.oidc.sessions import BROWSER_COOKIE, SESSION_COOKIE
from gateway.oidc.tokens import new_secret
from gateway.oidc.userinfo import userinfo_response

HOT_PATHS = {"/userinfo": 0, "/token": 1, "/introspect": 2, "/revoke": 3, "/authorize": 4,
             "/jwks": 5}
COOKIE_OPTIONS: dict[str, Any] = {"secure": True, "httponly": True, "samesite": "lax", "path": "/"}


def browser_id(request: Request) -> tuple[str, bool]:
    """The browser-binding cookie value, and whether it must be set on the response."""
    value = request.cookies.get(BROWSER_COOKIE)
    if value and 20 <= len(value) <= 64:
        return value, False
    return new_secret(), True


LANG_COOKIE = "cg_lang"
LANGUAGE_TAGS = {"zh": "zh-CN", "zh-cn": "zh-CN", "zh-hans": "zh-CN", "en": "en"}


def requested_language(params: list[tuple[str, str]]) -> str | None:
    """The first supported language of ``ui_locales`` (OIDC Core §3.1.2.1) or ``lang``."""
    values = dict(params)
    for tag in (values.get("ui_locales", "") + " " + values.get("lang", "")).split():
        language = LANGUAGE_TAGS.get(tag.lower()) or LANGUAGE_TAGS.get(tag.lower().split("-")[0])
        if language:
            return language
    return None


def outcome_response(outcome: Outcome, browser: str, set_browser: bool,
                     language: str | None = None) -> Response:
    if isinstance(outcome, ErrorPage):
        raise BrowserError(outcome.error, outcome.description)
    response = bridge.redirect(outcome.location)
    if set_browser:
        response.set_cookie(BROWSER_COOKIE, browser, **COOKIE_OPTIONS)
    if language:  # the pages that follow speak the language the shop asked for
        response.set_cookie(LANG_COOKIE, language, max_age=365 * 86400, **COOKIE_OPTIONS)
    return response


def build_router(  # noqa: C901 - one small closure per endpoint
    ctx: ProviderContext, server: ProviderServer, flow: AuthorizationFlow
) -> APIRouter:
    router = APIRouter()
    metadata = provider_metadata(
        ctx.issuer, ctx.catalogue,
        require_par=ctx.settings.require_pushed_authorization_requests)
    limit = ctx.settings.max_body_bytes

    @router.get("/.well-known/openid-configuration")
    @router.get("/.well-known/oauth-authorization-server")
    async def discovery() -> JSONResponse:
        return JSONResponse(metadata, headers={"Cache-Control": "public, max-age=3600"})

    @router.get("/jwks")
    async def jwks() -> JSONResponse:
        return JSONResponse(ctx.signing_keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    @router.get("/policies/{client_id}")
    @router.get("/policies/{client_id}/v{version}")
    async def shop_policy(client_id: str, version: int | None = None) -> JSONResponse:
        """A shop's current policy, public: who receives what, why, and for how long."""
        shop = ctx.shops.get(client_id)
        if shop is None or (version is not None and version != shop.config.policy.version):
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse({
            "client_id": shop.client_id, "name": shop.config.name, "name_zh": shop.config.name_zh,
            "contact": shop.config.contact,
            **shop.config.policy.model_dump(mode="json", by_alias=True),
        })

    @router.api_route("/authorize", methods=["GET", "POST"])
    async def authorize(request: Request) -> Response:
        try:
            params = bridge.query_fields(request) + await bridge.read_form(request, limit)
        except OAuth2Error as error:
            raise BrowserError(error.error, error.get_error_description() or "") from None
        browser, set_browser = browser_id(request)
        person = await bridge.in_worker(ctx.sessions.find, request.cookies.get(SESSION_COOKIE))
        outcome = await bridge.in_worker(flow.start, params, person, browser)
        return outcome_response(outcome, browser, set_browser, requested_language(params))

    @router.get("/authorize/continue")
    async def authorize_continue(request: Request) -> Response:
        browser, set_browser = browser_id(request)
        person = await bridge.in_worker(ctx.sessions.find, request.cookies.get(SESSION_COOKIE))
        request_id = request.query_params.get("request", "")
        outcome = await bridge.in_worker(flow.resume, request_id, person, browser)
        return outcome_response(outcome, browser, set_browser)

    async def token(request: Request) -> Response:
        try:
            oauth_request = await bridge.provider_request(request, ctx.endpoint("/token"), limit)
        except OAuth2Error as error:
            return bridge.error_response(error)
        return bridge.to_response(await bridge.in_worker(server.create_token_response, oauth_request))

    async def par(request: Request) -> Response:  # RFC 9126 (gateway/oidc/par.py)
        try:
            oauth_request = await bridge.provider_request(request, ctx.endpoint("/par"), limit)
        except OAuth2Error as error:
            return bridge.error_response(error)
        return bridge.to_response(await bridge.in_worker(push_response, flow, oauth_request))

    async def revoke(request: Request) -> Response:
        return await _endpoint(request, "revocation", "/revoke")

    async def introspect(request: Request) -> Response:
        return await _endpoint(request, "introspection", "/introspect")

    async def _endpoint(request: Request, name: str, path: str) -> Response:
        try:
            oauth_request = await bridge.provider_request(request, ctx.endpoint(path), limit)
        except OAuth2Error as error:
            return bridge.error_response(error)
        result = await bridge.in_worker(server.create_endpoint_response, name, oauth_request)
        return bridge.to_response(result)

    async def userinfo(request: Request) -> Response:
        try:
            form = dict(await bridge.read_form(request, limit))
        except OAuth2Error as error:
            return bridge.error_response(error)
        result = await bridge.in_worker(
            userinfo_response, ctx, request.headers.get("authorization"), form.get("access_token"),
            request.method, request.headers.getlist("dpop"),
        )
        return bridge.to_response(result)

    # The endpoints shops call on every request are plain Starlette routes: they take the
    # Request and need none of FastAPI's parameter parsing, which showed in their profile
    # (docs/performance.md). Routing tries routes in order, so they also go first.
    router.add_route("/token", token, methods=["POST"])
    router.add_route("/userinfo", userinfo, methods=["GET", "POST"])
    router.add_route("/introspect", introspect, methods=["POST"])
    router.add_route("/revoke", revoke, methods=["POST"])
    router.add_route("/par", par, methods=["POST"])
    router.routes.sort(key=lambda route: HOT_PATHS.get(getattr(route, "path", ""), len(HOT_PATHS)))
    return router
