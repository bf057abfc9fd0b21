"""The compliance console at ``/audit``: search, exports, release charts, integrity.

Staff sign in with their token once (a form with a CSRF token); the browser then holds a
short-lived staff session. Every search is audited exactly like an API query.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.audit import AuditFilter, AuditService
from gateway.audit.events import utc_timestamp
from gateway.errors import BrowserError
from gateway.oidc import bridge
from gateway.oidc.context import ProviderContext
from gateway.oidc.endpoints import COOKIE_OPTIONS, browser_id
from gateway.oidc.sessions import BROWSER_COOKIE
from gateway.web.audit_api import (
    FILTER_NAMES,
    STAFF_COOKIE,
    STAFF_READ,
    StaffAccess,
    last_verification,
    parse_filter,
    record_staff,
    run_verification,
)
from gateway.web.charts import stacked_bars
from gateway.web.csrf import csrf_token
from gateway.web.forms import posted_form
from gateway.web.rendering import Renderer

CHART_DAYS = 14
PAGE_SIZE = 50


def release_counts(audit: AuditService, now: datetime) -> tuple[list[str], Counter[tuple[str, str]],
                                                                 Counter[tuple[str, str]]]:
    """userinfo reads per (day, shop) and fields released per (day, field), last 14 days."""
    days = [(now - timedelta(days=n)).strftime("%Y-%m-%d") for n in range(CHART_DAYS - 1, -1, -1)]
    since = utc_timestamp(datetime.strptime(days[0], "%Y-%m-%d").replace(tzinfo=UTC))
    by_shop: Counter[tuple[str, str]] = Counter()
    by_field: Counter[tuple[str, str]] = Counter()
    for logged in audit.query.events(AuditFilter(action="userinfo_read", since=since)):
        day = logged.event.time[:10]
        by_shop[(day, logged.event.shop or "?")] += 1
        for field in logged.event.fields:
            by_field[(day, field)] += 1
    return days, by_shop, by_field


def build_console(  # noqa: C901 - one small closure per page
    ctx: ProviderContext, audit: AuditService, access: StaffAccess, renderer: Renderer,
    csrf_secret: bytes,
) -> APIRouter:
    router = APIRouter()

    def token(request: Request, purpose: str) -> str:
        return csrf_token(csrf_secret, browser_id(request)[0], purpose)

    async def form(request: Request, purpose: str) -> dict[str, str]:
        return dict(await posted_form(request, csrf_secret, purpose, ctx.settings.max_body_bytes))

    def login_page(request: Request, failed: bool = False) -> Response:
        browser, set_browser = browser_id(request)
        response = renderer.page(request, "console_login.html", failed=failed,
                                 status_code=401 if failed else 200,
                                 csrf=csrf_token(csrf_secret, browser, "staff-login"))
        if set_browser:
            response.set_cookie(BROWSER_COOKIE, browser, **COOKIE_OPTIONS)
        return response

    @router.get("/audit")
    async def console(request: Request) -> Response:
        member = await bridge.in_worker(access.member, request)
        if member is None:
            return login_page(request)
        params = dict(request.query_params)
        filters = {name: params[name] for name in FILTER_NAMES if params.get(name)}
        error, items, next_cursor = "", [], None
        try:
            flt = parse_filter(filters)
            cursor = params.get("cursor", "0")  # a log index; with shards, one per shard
            audit.query.parse_cursor(cursor)
        except ValueError as problem:
            error, flt, cursor = str(problem), None, "0"

        def run() -> dict[str, Any]:
            result: dict[str, Any] = {"items": [], "next_cursor": None}
            if flt is not None:
                record_staff(ctx, member, "staff_query", flt)
                page = audit.query.page(flt, cursor=cursor, limit=PAGE_SIZE)
                result = {"items": page.items, "next_cursor": page.next_cursor}
            days, by_shop, by_field = release_counts(audit, datetime.now(UTC))
            result["chart_shops"] = stacked_bars("userinfo reads per shop", days, by_shop)
            result["chart_fields"] = stacked_bars("fields released", days, by_field)
            latest = audit.latest_note()  # with shards: the note signed over all of them
            result["checkpoint"] = {
                "size": latest.size, "note": latest.note,
                "signed": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(latest.signed_at_ms / 1000)),
            } if latest else None
            verification = last_verification(ctx)
            if verification:
                problem = verification.get("problem") or {}
                verification["when"] = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                     time.gmtime(verification["verified_at"]))
                verification["problem"] = (f"index {problem.get('index')}: {problem.get('reason')}"
                                           if problem else "")
            result["verification"] = verification
            return result

        data = await bridge.in_worker(run)
        items, next_cursor = data.pop("items"), data.pop("next_cursor")
        return renderer.page(
            request, "console.html", member=member, items=items, next_cursor=next_cursor,
            sharded=audit.query.shards > 1,
            filters=filters, filter_names=FILTER_NAMES, error=error,
            query=urlencode({**filters, "csrf": token(request, STAFF_READ)}),
            verifier_key=audit.verifier_key, csrf_verify=token(request, "staff-verify"),
            csrf_logout=token(request, "staff-logout"), **data)

    @router.post("/audit/login")
    async def login(request: Request) -> Response:
        fields = await form(request, "staff-login")
        member = access.directory.authenticate(fields.get("token"))
        if member is None:
            return login_page(request, failed=True)
        session_id = await bridge.in_worker(access.sessions.start, member)
        response = RedirectResponse("/audit", status_code=303)
        response.set_cookie(STAFF_COOKIE, session_id, max_age=access.sessions.ttl, **COOKIE_OPTIONS)
        return response

    @router.post("/audit/logout")
    async def logout(request: Request) -> Response:
        await form(request, "staff-logout")
        await bridge.in_worker(access.sessions.end, request.cookies.get(STAFF_COOKIE))
        response = RedirectResponse("/audit", status_code=303)
        response.delete_cookie(STAFF_COOKIE, secure=True, httponly=True, samesite="lax")
        return response

    @router.post("/audit/verify")
    async def verify(request: Request) -> Response:
        await form(request, "staff-verify")
        member = await bridge.in_worker(access.member, request)
        if member is None or not member.may("verify"):
            raise BrowserError("access_denied", "Only admins verify the log.", 403)
        await bridge.in_worker(run_verification, ctx, audit, member)
        return RedirectResponse("/audit", status_code=303)

    return router
