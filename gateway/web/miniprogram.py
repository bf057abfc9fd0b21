"""The mini-program API: a shop's back end trades a ``wx.login`` code for a gateway code.

A WeChat mini program has no browser redirect: ``wx.login()`` gives it a code, which its
back end would normally send to WeChat's ``jscode2session`` and receive the person's
openid, unionid and ``session_key``. Here the shop's back end sends the code to the
gateway instead::

    POST /miniprogram/{provider_id}/login      (application/x-www-form-urlencoded)
    client authentication: client_secret_basic, client_secret_post or private_key_jwt
    js_code=…&code_challenge=…&code_challenge_method=S256[&scope=openid profile][&nonce=…]

    200 {"code": "…", "expires_in": 60, "iss": "…", "token_endpoint": "…/token"}

and redeems the returned code at the ordinary token endpoint (``grant_type=
authorization_code``, the ``code_verifier``, no ``redirect_uri``) like any other, getting
an ID token whose ``sub`` is the shop's pairwise subject, and access and refresh tokens.

Why a gateway authorization code rather than tokens here: the token endpoint stays the
only place that issues tokens (one implementation of ID tokens, token families, replay
revocation and auditing), and the shop uses its ordinary OIDC client. The shop must
authenticate (a public client cannot), be listed in the mini program's ``shops``, and use
PKCE like every other authorization.

Never returned: openid, unionid or ``session_key`` (the connector drops the key on
arrival). What the person's profile may release follows their consent at this shop, as
on every other path: ``wx.login`` is silent, so a first sign-in here releases the
pairwise ``sub`` and nothing else until the person consents in the gateway's pages.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import ConfigError
from gateway.oidc import bridge, fapi
from gateway.oidc.clients import Shop
from gateway.oidc.context import ProviderContext
from gateway.oidc.server import JSON_HEADERS, ProviderRequest, ProviderServer
from gateway.oidc.server import Response as ProviderResponse
from gateway.oidc.tokens import AuthorizationCode, StaleGrantError, new_family
from gateway.policy import requested_fields
from gateway.store.limits import mini_program_shop, spend
from gateway.upstream import UpstreamError, UpstreamIdentity
from gateway.upstream.wechat import WeChatMiniProgram

log = logging.getLogger(__name__)

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.2


class MiniProgramUnavailableError(OAuth2Error):  # type: ignore[misc]
    """WeChat is busy, rate-limiting or failing: the shop may try again later."""

    error = "temporarily_unavailable"
    status_code = 503


@dataclass(frozen=True, slots=True)
class CheckedLogin:
    """A mini-program login request whose shop is authenticated and whose form is valid."""

    shop: Shop
    js_code: str
    challenge: str
    nonce: str | None
    scope: str


def check_mini_program_login(server: ProviderServer, program: WeChatMiniProgram,
                             request: ProviderRequest) -> CheckedLogin:
    """Authenticate the shop and check the form (synchronous: authlib and Redis, in a worker)."""
    shop: Shop = server.authenticate_client(request, AUTH_METHODS, "token")
    if shop.client_id not in program.shops or not shop.check_grant_type("authorization_code"):
        raise UnauthorizedClientError(description="This shop may not use this mini program.")
    form: Mapping[str, str] = request.form
    js_code = form.get("js_code", "")
    if not js_code or len(js_code) > 256:
        raise InvalidRequestError("Missing 'js_code'.")
    challenge = form.get("code_challenge", "")
    if not _CHALLENGE.match(challenge) or form.get("code_challenge_method") != "S256":
        raise InvalidRequestError("PKCE is required: 'code_challenge' with method S256.")
    nonce = form.get("nonce")
    if nonce is not None and len(nonce) > 255:
        raise InvalidRequestError("The 'nonce' is too long.")
    scope = shop.get_allowed_scope(form.get("scope") or "openid")
    if "openid" not in scope.split():
        raise InvalidScopeError("The scope must include 'openid'.")
    return CheckedLogin(shop, js_code, challenge, nonce, scope)


async def exchange_js_code(program: WeChatMiniProgram, checked: CheckedLogin) -> UpstreamIdentity:
    """Ask WeChat whose code it is: async HTTP with the call deadline, on the event loop."""
    try:
        return await program.exchange(checked.js_code)
    except UpstreamError as error:
        log.warning("mini-program sign-in failed", extra={"reason": error.reason,
                                                          "client_id": checked.shop.client_id})
        if error.retryable:
            raise MiniProgramUnavailableError() from None
        raise InvalidGrantError("The wx.login code is invalid, used, expired or refused.") from None


def mini_program_login(ctx: ProviderContext, program: WeChatMiniProgram, checked: CheckedLogin,
                       identity: UpstreamIdentity) -> ProviderResponse:
    """Resolve the person WeChat named and issue a gateway code (synchronous, in a worker)."""
    shop, challenge, nonce, scope = checked.shop, checked.challenge, checked.nonce, checked.scope
    person_id = ctx.identities.resolve(identity)
    # The same audit events as a browser sign-in and its authorization code.
    ctx.record("sign_in", actor_type="person", actor_id=person_id, person=person_id)
    code = ctx.tokens.new_credential(person_id)
    lifetime = fapi.code_lifetime(shop.config, ctx.tokens.code_ttl)  # FAPI 2.0 shops: 60 s
    consent = ctx.consents.state(person_id, shop.client_id)
    if consent.record is not None and consent.record.withdrawn_at:
        # Everything was withdrawn from this shop: not even the pseudonym until the person
        # decides again in the gateway's pages.
        raise AccessDeniedError(description="The person withdrew consent for this shop.")
    try:
        ctx.tokens.issue_code(code, AuthorizationCode(
            client_id=shop.client_id, person_id=person_id, redirect_uri="", scope=scope,
            family=new_family(), auth_time=int(time.time()), nonce=nonce, code_challenge=challenge,
            code_challenge_method="S256", amr=[],
            fields=sorted(requested_fields(scope, None, ctx.catalogue)),
        ), consent.generation, ttl=lifetime)
    except StaleGrantError:  # withdrawn or erased at this very moment: the shop may retry
        raise MiniProgramUnavailableError() from None
    ctx.record("code_issued", shop=shop.client_id, person=person_id)
    log.info("mini-program sign-in", extra={"client_id": shop.client_id,
                                            "provider": program.provider_id})
    body = {"code": code, "expires_in": lifetime, "iss": ctx.issuer,
            "token_endpoint": ctx.endpoint("/token")}
    return 200, body, list(JSON_HEADERS)


def build_miniprogram_router(ctx: ProviderContext, server: ProviderServer,
                             programs: Mapping[str, WeChatMiniProgram]) -> APIRouter:
    """The API's route; refuses to start when a mini program names an unknown shop."""
    for program in programs.values():
        unknown = sorted(shop for shop in program.shops if ctx.shops.get(shop) is None)
        if unknown:
            raise ConfigError(f"provider {program.provider_id}: unknown shops {unknown}")
    router = APIRouter()
    limit = ctx.settings.max_body_bytes

    @router.post("/miniprogram/{provider_id}/login")
    async def login(request: Request, provider_id: str) -> Response:
        program = programs.get(provider_id)
        try:
            if program is None:
                raise InvalidRequestError("Unknown mini program.", status_code=404)
            oauth_request = await bridge.provider_request(
                request, ctx.endpoint(f"/miniprogram/{provider_id}/login"), limit)
            # Shop authentication in a worker, WeChat on the event loop (no thread waits on
            # it), then the Redis work in a worker again.
            checked = await bridge.in_worker(check_mini_program_login, server, program, oauth_request)
            # Per shop only once it has authenticated: nobody can spend a shop's budget
            # (WeChat's call quota) in its name.
            await bridge.in_worker(spend, ctx.settings, ctx.store.limits, mini_program_shop(ctx.settings),
                                   checked.shop.client_id)
            identity = await exchange_js_code(program, checked)
            result = await bridge.in_worker(mini_program_login, ctx, program, checked, identity)
        except OAuth2Error as error:
            return bridge.error_response(error)
        return bridge.to_response(result)

    return router
