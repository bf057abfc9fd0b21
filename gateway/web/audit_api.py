"""The compliance staff's API under ``/audit/api``: query, export, proofs, checkpoints, verify.

Bearer tokens (``Authorization: Bearer cgs_…``) or the console's session cookie. Every query
and export is itself an audit event (actor: the staff member), written before any result
leaves. Exports are streamed, never built in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from gateway.audit import AuditFilter, AuditService
from gateway.audit.errors import AuditError
from gateway.audit.events import ACTIONS, OUTCOMES, is_identifier, is_name
from gateway.audit.export import export_csv, export_jsonl
from gateway.audit.staff import StaffDirectory, StaffSessions
from gateway.config.staff import StaffMember
from gateway.oidc import bridge
from gateway.oidc.context import ProviderContext
from gateway.oidc.sessions import BROWSER_COOKIE
from gateway.web.csrf import csrf_valid

STAFF_COOKIE = "__Host-cg_staff"
FILTER_NAMES = ("person", "shop", "action", "field", "outcome", "since", "until")
MAX_PAGE = 500


class StaffAccess:
    """Who is asking: a bearer token, or the console's session cookie."""

    def __init__(self, directory: StaffDirectory, sessions: StaffSessions) -> None:
        self.directory = directory
        self.sessions = sessions

    def member(self, request: Request) -> StaffMember | None:
        authorization = request.headers.get("authorization", "")
        if authorization:
            scheme, _, token = authorization.partition(" ")
            return self.directory.authenticate(token.strip()) if scheme.lower() == "bearer" else None
        return self.directory.get(self.sessions.member_id(request.cookies.get(STAFF_COOKIE)))


def parse_filter(params: dict[str, str]) -> AuditFilter:
    """An AuditFilter from query parameters; ValueError with a clear message otherwise."""
    values = {name: params[name] for name in FILTER_NAMES if params.get(name)}
    if values.get("action") and values["action"] not in ACTIONS:
        raise ValueError(f"unknown action; one of {', '.join(ACTIONS)}")
    if values.get("outcome") and values["outcome"] not in OUTCOMES:
        raise ValueError(f"unknown outcome; one of {', '.join(OUTCOMES)}")
    # The filter is written into the staff_query event: values the event model refuses
    # (``*``, spaces, …) would otherwise surface as a 500 when the query is recorded.
    for name in ("person", "shop"):
        if name in values and not is_identifier(values[name]):
            raise ValueError(f"{name} must be an id: letters, digits and _.:=+/- (at most 128)")
    if "field" in values and not is_name(values["field"]):
        raise ValueError("field must be a catalogue field name, e.g. phone")
    try:
        return AuditFilter(**values)
    except ValueError:
        raise ValueError("since/until must look like 2026-03-01T00:00:00.000Z") from None


def record_staff(ctx: ProviderContext, member: StaffMember, action: Literal["staff_query", "staff_export"],
                 flt: AuditFilter) -> None:
    ctx.record(action, actor_type="staff", actor_id=member.id, person=flt.person, shop=flt.shop,
               fields=[flt.field] if flt.field else ())


def _error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def stream(lines: Iterator[str]) -> Iterator[bytes]:
    for line in lines:
        yield line.encode()


STAFF_READ = "staff-read"  # CSRF purpose of the console's links to queries and exports


def build_audit_api(  # noqa: C901 - one small closure per endpoint
    ctx: ProviderContext, audit: AuditService, access: StaffAccess, csrf_secret: bytes
) -> APIRouter:
    router = APIRouter(prefix="/audit/api")

    async def staff(request: Request, permission: Literal["read", "export", "verify"],
                    audited: bool = False) -> StaffMember | JSONResponse:
        # A state-changing call must carry the bearer token itself. Queries and exports are
        # audited acts in the staff member's name: with the console's cookie alone they also
        # need the console's CSRF token (its links carry one), or a link on another site could
        # make a staff browser run an export (SameSite=Lax sends the cookie on a top-level GET).
        cookie_only = "authorization" not in request.headers
        if cookie_only and (request.method != "GET" or (audited and not csrf_valid(
                csrf_secret, request.cookies.get(BROWSER_COOKIE), STAFF_READ,
                request.query_params.get("csrf")))):
            member = None
        else:
            member = await bridge.in_worker(access.member, request)
        if member is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="consent-gateway-audit"'})
        if not member.may(permission):
            return _error(403, "insufficient_scope", f"the {member.role} role may not {permission}")
        return member

    @router.get("/events")
    async def events(request: Request) -> Response:
        member = await staff(request, "read", audited=True)
        if isinstance(member, JSONResponse):
            return member
        params = dict(request.query_params)
        try:
            flt = parse_filter(params)
            cursor = params.get("cursor", "0")  # a log index; with shards, one per shard
            audit.query.parse_cursor(cursor)
            limit = min(int(params.get("limit", "100")), MAX_PAGE)
            if limit < 1:
                raise ValueError("cursor and limit must be positive")
        except ValueError as error:
            return _error(400, "invalid_request", str(error))
        sharded = audit.query.shards > 1

        def run() -> dict[str, Any]:
            record_staff(ctx, member, "staff_query", flt)
            page = audit.query.page(flt, cursor=cursor, limit=limit)
            return {"items": [{**({"shard": item.shard} if sharded else {}), "index": item.index,
                               "event": item.event.model_dump(mode="json")} for item in page.items],
                    "next_cursor": page.next_cursor}

        return JSONResponse(await bridge.in_worker(run), headers={"Cache-Control": "no-store"})

    @router.get("/export")
    async def export(request: Request) -> Response:
        member = await staff(request, "export", audited=True)
        if isinstance(member, JSONResponse):
            return member
        params = dict(request.query_params)
        fmt = params.get("format", "jsonl")
        if fmt not in ("jsonl", "csv"):
            return _error(400, "invalid_request", "format must be jsonl or csv")
        try:
            flt = parse_filter(params)
        except ValueError as error:
            return _error(400, "invalid_request", str(error))
        await bridge.in_worker(record_staff, ctx, member, "staff_export", flt)
        lines = export_jsonl(audit.query, flt) if fmt == "jsonl" else export_csv(audit.query, flt)
        media = "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"
        name = f"audit-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.{fmt}"
        return StreamingResponse(stream(lines), media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})

    @router.get("/checkpoint")
    async def checkpoint(request: Request) -> Response:
        member = await staff(request, "read")
        if isinstance(member, JSONResponse):
            return member
        latest = await bridge.in_worker(audit.latest_note)  # with shards: signed over all of them
        return JSONResponse({
            "verifier_key": audit.verifier_key,
            "checkpoint": latest.note if latest else None,
            "size": latest.size if latest else 0,
            "last_verification": await bridge.in_worker(last_verification, ctx),
        })

    @router.get("/proof/{index}")
    async def proof(request: Request, index: int, shard: int = 0) -> Response:
        member = await staff(request, "read")
        if isinstance(member, JSONResponse):
            return member
        try:
            # AuditService.prove signs a checkpoint first if none covers the event yet.
            text = (await bridge.in_worker(audit.prove, index, shard)).to_text()
        except (AuditError, ValueError) as error:
            return _error(404, "not_found", str(error))
        name = f"event-{shard}-{index}" if audit.combined is not None else f"event-{index}"
        return PlainTextResponse(text, headers={
            "Content-Disposition": f'attachment; filename="{name}.tlog-proof"'})

    @router.post("/verify")
    async def verify(request: Request) -> Response:
        member = await staff(request, "verify")
        if isinstance(member, JSONResponse):
            return member
        report = await bridge.in_worker(run_verification, ctx, audit, member)
        return JSONResponse(report)

    return router


def run_verification(ctx: ProviderContext, audit: AuditService, member: StaffMember | None) -> dict[str, Any]:
    report = audit.verify()
    result = {
        "ok": report.ok, "size": report.size, "entries_checked": report.entries_checked,
        "checkpoints_checked": report.checkpoints_checked,
        "latest_checkpoint": report.latest_checkpoint, "unsigned_tail": report.unsigned_tail,
        "problem": asdict(report.problem) if report.problem else None,
        "verified_at": int(time.time()), "by": member.id if member else "system",
    }
    ctx.store.redis.set(ctx.store.keys.audit_last_verify(), json.dumps(result))
    return result


def last_verification(ctx: ProviderContext) -> dict[str, Any] | None:
    raw = ctx.store.get(ctx.store.keys.audit_last_verify())
    return dict(json.loads(raw)) if raw else None
