"""The consent centre at ``/account``: what was shared, withdrawal, download, erasure.

Every change is a form with a CSRF token and a confirmation step (PIPL art. 15: withdrawing
is as easy as granting, and never happens by accident).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.errors import BrowserError
from gateway.oidc import bridge
from gateway.oidc.account import AccountService, ShopConsent
from gateway.oidc.endpoints import COOKIE_OPTIONS, browser_id, outcome_response
from gateway.oidc.sessions import BROWSER_COOKIE, SESSION_COOKIE, Person
from gateway.policy import describe
from gateway.store.limits import account_writes, spend
from gateway.web.csrf import csrf_token
from gateway.web.forms import posted_form
from gateway.web.history import history_lines
from gateway.web.i18n import translator
from gateway.web.pages import WebContext

HISTORY_LENGTH = 50
ERASE_REAUTH_SECONDS = 300  # erasure needs a sign-in at most this old


@dataclass(slots=True)
class GrantView:
    field: str
    words: str
    granted: str
    expires: str
    separately: bool  # optional or sensitive: withdrawn on its own; required ones go with the purpose


@dataclass(slots=True)
class PurposeGrants:
    id: str
    name: str
    description: str
    grants: list[GrantView] = field(default_factory=list)


def _day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def shop_views(consents: list[ShopConsent], web: WebContext, language: str,
               now: float) -> list[dict[str, Any]]:
    catalogue = web.provider.catalogue
    views = []
    for consent in consents:
        policy = consent.shop.config.policy
        purposes: dict[str, PurposeGrants] = {}
        for grant in consent.live_grants(now):
            purpose = policy.purpose(grant.purpose)
            spec = catalogue.fields.get(grant.field)
            if purpose is None or spec is None:
                continue
            view = purposes.setdefault(grant.purpose, PurposeGrants(
                purpose.id, purpose.name.get(language), purpose.description.get(language)))
            words = describe(grant.transform, spec.description.get(language), language, spec.type)
            rule = next((r for r in policy.rules_for(grant.purpose) if r.field == grant.field), None)
            separately = rule is None or not rule.required or spec.sensitivity == "sensitive"
            view.grants.append(GrantView(grant.field, words, _day(grant.granted_at),
                                         _day(grant.expires_at), separately))
        name = consent.shop.config.name
        if language == "zh-CN" and consent.shop.config.name_zh:
            name = consent.shop.config.name_zh
        views.append({"client_id": consent.shop.client_id, "name": name,
                      "contact": consent.shop.config.contact,
                      "policy_version": consent.record.policy_version,
                      "purposes": list(purposes.values())})
    return views


def build_account_router(  # noqa: C901 - one small closure per page
    web: WebContext, account: AccountService
) -> APIRouter:
    router = APIRouter()
    ctx = web.provider

    async def signed_in(request: Request) -> Person | None:
        return await bridge.in_worker(ctx.sessions.find, request.cookies.get(SESSION_COOKIE))

    async def confirmed_form(request: Request, purpose: str) -> dict[str, str]:
        return dict(await posted_form(request, web.csrf_secret, purpose, ctx.settings.max_body_bytes))

    async def spend_write(person: Person) -> None:
        # Per person, after sign-in: a stolen or scripted session cannot churn consents and
        # the audit log (issue 14); RateLimitedError answers 429 with the error page.
        await bridge.in_worker(spend, ctx.settings, ctx.store.limits, account_writes(ctx.settings), person.id)

    def token(request: Request, purpose: str) -> str:
        return csrf_token(web.csrf_secret, browser_id(request)[0], purpose)

    @router.get("/account")
    async def account_page(request: Request) -> Response:
        person = await signed_in(request)
        browser, set_browser = browser_id(request)
        if person is None:
            outcome = await bridge.in_worker(web.flow.start_account_sign_in, browser)
            return outcome_response(outcome, browser, set_browser)
        language = web.renderer.language(request)
        consents = await bridge.in_worker(account.consents, person.id)
        recent = await bridge.in_worker(ctx.audit.query.latest_for_person, person.id, HISTORY_LENGTH)
        response = web.renderer.page(
            request, "account.html", shops=shop_views(consents, web, language, time.time()),
            history=history_lines(recent, ctx.shops, ctx.catalogue, language),
            csrf_withdraw=token(request, "withdraw"), csrf_erase=token(request, "erase"))
        if set_browser:
            response.set_cookie(BROWSER_COOKIE, browser, **COOKIE_OPTIONS)
        return response

    @router.post("/account/withdraw")
    async def withdraw(request: Request) -> Response:
        fields = await confirmed_form(request, "withdraw")
        person = await signed_in(request)
        if person is None:
            raise BrowserError("login_required", "Sign in again to change your consents.", 401)
        shop = ctx.shops.get(fields.get("shop"))
        if shop is None:
            raise BrowserError("invalid_request", "Unknown shop.", 404)
        params = [(k, fields[k]) for k in ("shop", "purpose", "field") if fields.get(k)]
        if fields.get("confirm") != "yes":
            t = translator(web.renderer.language(request))
            return web.renderer.page(request, "confirm.html", title=t["confirm_withdraw_title"],
                                     message=t["confirm_withdraw"], action="/account/withdraw",
                                     params=params, csrf=token(request, "withdraw"))
        await spend_write(person)
        await bridge.in_worker(account.withdraw, person.id, shop.client_id,
                               fields.get("purpose") or None, fields.get("field") or None)
        return RedirectResponse("/account", status_code=303)

    @router.get("/account/proof/{index}")
    async def proof(request: Request, index: int) -> Response:
        """An inclusion proof (c2sp.org/tlog-proof) for one of the person's own events."""
        person = await signed_in(request)
        if person is None:
            return RedirectResponse("/account", status_code=303)
        shard = ctx.audit.shard_of_person(person.id)  # a person's events all live in one shard
        logged = await bridge.in_worker(ctx.audit.query.event, index, shard)
        if logged is None or logged.event.person != person.id:
            raise BrowserError("not_found", "No such event in your history.", 404)
        text = (await bridge.in_worker(ctx.audit.prove, index, shard)).to_text()
        return Response(text, media_type="text/plain; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="event-{index}.tlog-proof"',
            "Cache-Control": "no-store"})

    @router.get("/account/checkpoint")
    async def checkpoint(request: Request) -> Response:
        """The latest signed checkpoint and the key to check it with (public information)."""
        latest = await bridge.in_worker(ctx.audit.latest_note)  # with shards: signed over all
        body = (latest.note if latest else "") + f"\nverifier key: {ctx.audit.verifier_key}\n"
        return Response(body, media_type="text/plain; charset=utf-8")

    @router.get("/account/export")
    async def export(request: Request) -> Response:
        person = await signed_in(request)
        if person is None:
            return RedirectResponse("/account", status_code=303)
        data = await bridge.in_worker(account.export, person.id)
        return Response(json.dumps(data, ensure_ascii=False, indent=2), media_type="application/json",
                        headers={"Content-Disposition": 'attachment; filename="my-data.json"',
                                 "Cache-Control": "no-store"})

    @router.post("/account/erase")
    async def erase(request: Request) -> Response:
        fields = await confirmed_form(request, "erase")
        person = await signed_in(request)
        if person is None:
            raise BrowserError("login_required", "Sign in again to erase your account.", 401)
        if time.time() - person.signed_in_at > ERASE_REAUTH_SECONDS:
            # Erasure cannot be undone: a session left open on a shared phone must not be
            # enough. Sign in again, then come back to the consent centre (issue 14).
            browser, set_browser = browser_id(request)
            outcome = await bridge.in_worker(web.flow.start_account_sign_in, browser)
            return outcome_response(outcome, browser, set_browser)
        t = translator(web.renderer.language(request))
        if fields.get("confirm") != "yes":
            return web.renderer.page(request, "confirm.html", title=t["confirm_erase_title"],
                                     message=t["confirm_erase"], action="/account/erase", params=[],
                                     csrf=token(request, "erase"))
        await spend_write(person)
        await bridge.in_worker(account.erase, person.id)
        await bridge.in_worker(ctx.sessions.end, request.cookies.get(SESSION_COOKIE))
        response = web.renderer.page(request, "logout.html", done=True, params=[])
        response.delete_cookie(SESSION_COOKIE, secure=True, httponly=True, samesite="lax")
        return response

    return router
