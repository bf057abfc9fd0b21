"""CSRF tokens for every form: an HMAC of the browser-binding cookie and the form's purpose.

Stateless (nothing stored) and bound to one browser: a page from another site cannot know
the token, and a token lifted from one browser does not work in another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def csrf_token(secret: bytes, browser: str, purpose: str) -> str:
    mac = hmac.new(secret, f"{browser}\x00{purpose}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def csrf_valid(secret: bytes, browser: str | None, purpose: str, token: str | None) -> bool:
    if not browser or not token:
        return False
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError,
    # that is a 500, for any forged token like "é"); a token is ASCII, anything else is wrong.
    expected = csrf_token(secret, browser, purpose).encode()
    return hmac.compare_digest(expected, token.encode("utf-8", "surrogateescape"))
