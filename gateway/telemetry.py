"""Structured JSON logs, Prometheus metrics and security headers, for every request.

Log lines carry the route, status, duration and request id, plus whatever ``extra`` a call
site adds; call sites never pass tokens, secrets or profile values, and the query string is
never logged (it may hold codes and state).
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The current request's id, for log lines and audit events (copied into worker threads).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}



def content_security_policy(form_action: Iterable[str] = ()) -> str:
    """Strict by default: pages load their stylesheet from the gateway and nothing else, and
    forms submit only to the gateway. A page whose form ends at another origin (the consent
    form's redirect to the shop: Chrome checks ``form-action`` on every redirect after a form
    POST) names exactly those origins, never a wildcard."""
    targets = " ".join(["'self'", *sorted(set(form_action))])
    return ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
            f"frame-ancestors 'none'; base-uri 'none'; form-action {targets}")


SECURITY_HEADERS = [
    (b"content-security-policy", content_security_policy().encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=31536000"),
]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            # The type and where it was raised, never the message or locals: both may quote
            # request input or profile values.
            kind, _, trace = record.exc_info
            entry["exception"] = kind.__name__ if kind else None
            while trace is not None and trace.tb_next is not None:
                trace = trace.tb_next
            if trace is not None:
                code = trace.tb_frame.f_code
                filename = code.co_filename.rsplit("/", 1)[-1]
                entry["at"] = f"{filename}:{trace.tb_lineno} in {code.co_name}"
        return orjson.dumps(entry, default=str).decode()


# Libraries that log credentials at DEBUG (authlib logs every issued token dict) are held at
# WARNING whatever the configured level, so a debugging operator cannot leak tokens.
SECRET_LOGGING_LIBRARIES = ("authlib",)


def hold_secret_logging_libraries() -> None:
    for name in SECRET_LOGGING_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    hold_secret_logging_libraries()
    for noisy in ("uvicorn.access",):  # replaced by our own access line without query strings
        logging.getLogger(noisy).disabled = True


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_http_requests", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("gateway_http_request_seconds", "HTTP request duration",
                                 ["route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))


class TelemetryMiddleware:
    """Pure ASGI middleware: request id, security headers, metrics and one access log line.

    Every response carries ``x-request-id`` — error answers too: an exception that escapes
    the app before its response started is answered here by ``on_error`` (so it gets the
    headers and the connection stays open), instead of by Starlette's outermost handler,
    which sits outside this middleware and then lets the server drop the connection.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics,
                 on_error: Callable[[Request, Exception], Response] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.on_error = on_error
        self.log = logging.getLogger("gateway.access")
        # Label children looked up once per (method, route, status): labels() takes a lock
        # and builds a key on every call, which shows in the request profile.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = secrets.token_hex(8)
        token = REQUEST_ID.set(request_id)
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {name for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in present]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception as error:
                if started or self.on_error is None:
                    raise  # a response under way cannot be replaced; the server ends the connection
                response = self.on_error(Request(scope, receive), error)
                await response(scope, receive, send_with_headers)
        finally:
            REQUEST_ID.reset(token)
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            key = (scope["method"], path, status)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = self.metrics.requests.labels(key[0], path, str(status))
            timer = self._timers.get(path)
            if timer is None:
                timer = self._timers[path] = self.metrics.latency.labels(path)
            counter.inc()
            timer.observe(elapsed)
            self.log.info("request", extra={"method": scope["method"], "route": path,
                                            "status": status, "ms": round(elapsed * 1000, 2),
                                            "request_id": request_id})
