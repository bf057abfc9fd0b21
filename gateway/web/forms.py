"""Reading a person's or a staff member's form: size-capped, strict UTF-8, CSRF-checked."""

from __future__ import annotations

from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.requests import Request

from gateway.errors import BrowserError
from gateway.oidc import bridge
from gateway.oidc.sessions import BROWSER_COOKIE
from gateway.web.csrf import csrf_valid

EXPIRED_FORM = "The form has expired. Reload the page."


async def read_page_form(request: Request, max_bytes: int) -> list[tuple[str, str]]:
    """The POSTed fields (repeated names kept); a malformed body is an error page."""
    try:
        return await bridge.read_form(request, max_bytes)
    except OAuth2Error as error:
        raise BrowserError(error.error, error.get_error_description() or "") from None


def check_csrf(request: Request, secret: bytes, purpose: str, token: str | None) -> None:
    """403 unless ``token`` is this browser's CSRF token for ``purpose``."""
    if not csrf_valid(secret, request.cookies.get(BROWSER_COOKIE), purpose, token):
        raise BrowserError("invalid_request", EXPIRED_FORM, 403)


async def posted_form(request: Request, secret: bytes, purpose: str,
                      max_bytes: int) -> list[tuple[str, str]]:
    """The POSTed fields of one of our own forms, after checking its CSRF token."""
    pairs = await read_page_form(request, max_bytes)
    check_csrf(request, secret, purpose, dict(pairs).get("csrf"))
    return pairs
