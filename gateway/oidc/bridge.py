"""The one bridge between FastAPI and authlib's synchronous server.

Reading the request body is async (Starlette), so the bridge reads and checks it here:
size limit, form encoding, strict UTF-8. Then it runs the authlib call in Starlette's worker
thread pool, where the synchronous Redis client does the storage work, and turns authlib's
``(status, body, headers)`` into a response. Nothing else in ``gateway/oidc`` touches the
framework (docs/architecture.md explains the choice and its measured cost).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError, OAuth2Error
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.oidc.server import JSON_HEADERS, ProviderRequest

T = TypeVar("T")
FORM_TYPE = "application/x-www-form-urlencoded"


class BodyTooLargeError(InvalidRequestError):  # type: ignore[misc]
    status_code = 413
    description = "The request body is too large."


def parse_fields(raw: str, what: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(raw, keep_blank_values=True, strict_parsing=False, max_num_fields=100,
                         encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError(f"The {what} is not valid UTF-8 form data.") from None


async def read_form(request: Request, max_bytes: int) -> list[tuple[str, str]]:
    """The form fields of a POST, read with a size cap and strict UTF-8 decoding."""
    if request.method != "POST":
        return []
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLargeError()
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise BodyTooLargeError()
    if not body:
        return []
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise InvalidRequestError(f"The body must be {FORM_TYPE}.")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("The body is not valid UTF-8.") from None
    return parse_fields(text, "body")


def query_fields(request: Request) -> list[tuple[str, str]]:
    raw = request.scope.get("query_string", b"")
    try:
        text = raw.decode("ascii")  # a URL query is ASCII; anything else is malformed
    except UnicodeDecodeError:
        raise InvalidRequestError("The query string is not valid.") from None
    return parse_fields(text, "query string")


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """RFC 7617: Basic credentials are base64 of UTF-8 ``id:secret`` (each form-encoded, RFC
    6749 §2.3.1, which the caller undoes); None without Basic credentials. authlib decodes
    them without catching a malformed value (a 500): raises InvalidClientError instead."""
    if not authorization or not authorization[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClientError(description="Malformed HTTP Basic credentials.") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise InvalidClientError(description="Malformed HTTP Basic credentials.")
    return client_id, secret


def check_basic_credentials(authorization: str | None) -> None:
    """Refuse malformed Basic credentials as the client error they are (before authlib)."""
    basic_credentials(authorization)


async def provider_request(request: Request, endpoint_url: str, max_bytes: int) -> ProviderRequest:
    """Build authlib's request object from a Starlette request."""
    check_basic_credentials(request.headers.get("authorization"))
    form = await read_form(request, max_bytes)
    return ProviderRequest(request.method, endpoint_url, request.headers, query_fields(request), form)


async def in_worker(function: Callable[..., T], *args: Any) -> T:
    """Run synchronous provider code (authlib, sync Redis) off the event loop."""
    return await run_in_threadpool(function, *args)


def to_response(result: tuple[int, Any, list[tuple[str, str]]] | None) -> Response:
    if result is None:
        return Response(status_code=204)
    status, body, headers = result
    if isinstance(body, dict):
        body = orjson.dumps(body)
    return Response(content=body, status_code=status, headers=dict(headers))


def error_response(error: OAuth2Error) -> Response:
    """RFC 6749 §5.2 JSON for a protocol error raised outside authlib's own handling."""
    status, body, headers = error()
    merged = dict(JSON_HEADERS) | dict(headers)
    return Response(json.dumps(dict(body)), status_code=status, headers=merged)


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})
