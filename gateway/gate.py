"""Refusing to serve while the store cannot be trusted (audit continuity broken).

Pure ASGI middleware, checked per request against a value in memory (the continuity check
runs in its own thread), so a healthy gateway pays one attribute read. While a problem is
set, every request but the liveness probe and the metrics is answered 503
``temporarily_unavailable`` — RFC 6749 error JSON for APIs, the error page for browsers —
with ``Retry-After``; nothing is read from or written to a Redis that may have lost data.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

ALWAYS_SERVED = frozenset({"/healthz/live", "/metrics"})
RETRY_AFTER_SECONDS = "30"  # longer than an outage's 5: an operator has to act first
DESCRIPTION = "The gateway is stopped by its operator's data checks. Please try again later."


class ServiceGate:
    def __init__(self, app: ASGIApp, problem: Callable[[], str | None],
                 page: Callable[[Request, str], Response], is_page: Callable[[str], bool]) -> None:
        self.app = app
        self.problem = problem
        self.page = page
        self.is_page = is_page  # the app's one rule: the person's pages get the error page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ALWAYS_SERVED or self.problem() is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        # The reason goes to the operator's log (continuity.py), not to the public.
        if self.is_page(scope["path"]):
            response = self.page(request, DESCRIPTION)
        else:
            response = Response(orjson.dumps({"error": "temporarily_unavailable",
                                              "error_description": DESCRIPTION}),
                                status_code=503, media_type="application/json")
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        response.headers["Cache-Control"] = "no-store"
        await response(scope, receive, send)
