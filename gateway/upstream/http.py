"""Calls to providers: one HTTP client, timeouts and retries from settings, clear failures.

Every failure becomes an :class:`UpstreamError` saying what failed (never the URL, which
for WeChat carries the app secret and the code in its query): a timeout, a refused
connection, a 5xx or a body that is not what was promised is ``retryable`` (the shop is
told ``temporarily_unavailable``); anything else is the provider saying no.

Retries: the transport retries a failed *connection* ``retries`` times for every request
(nothing was sent, so it is safe even for a code exchange); reads (``idempotent=True``:
discovery, JWKS, profiles) are also retried after a timeout or a 5xx. A code exchange is
never sent twice, since a code works once and the second answer would be "code used".

Bodies are parsed whatever their Content-Type: WeChat serves JSON as ``text/plain``,
GitHub form-encodes its token response unless asked for JSON.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx

from gateway.upstream.base import UpstreamError

log = logging.getLogger(__name__)

USER_AGENT = "consent-gateway/0.1"
MAX_BODY_BYTES = 1024 * 1024  # a profile, token or key set is a few kilobytes
_BACKOFF_SECONDS = 0.2

# httpx logs every request line, query string included, at INFO: that would put WeChat's
# app secret and every code into the gateway's log. Only warnings from it are wanted.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer, read in full (bounded by :data:`MAX_BODY_BYTES`)."""

    status: int
    content_type: str
    body: bytes
    what: str

    def text(self) -> str:
        """The body as text: UTF-8, or the charset the provider declared (WeChat: gbk)."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            pass
        charset = ""
        for part in self.content_type.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset":
                charset = value.strip('"').lower()
        try:
            return self.body.decode(charset or "utf-8")
        except (LookupError, UnicodeDecodeError):
            raise UpstreamError(f"{self.what}: body is not text", retryable=True) from None

    def json_value(self) -> Any:
        """The body as JSON, whatever the Content-Type says."""
        try:
            return json.loads(self.text())
        except ValueError:
            raise UpstreamError(f"{self.what}: body is not JSON (HTTP {self.status}, "
                                f"{self.content_type or 'no type'})", retryable=True) from None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, whatever the Content-Type says."""
        value = self.json_value()
        if not isinstance(value, dict):
            raise UpstreamError(f"{self.what}: JSON body is not an object", retryable=True)
        return value

    def json_or_form(self) -> dict[str, Any]:
        """A token response: JSON, or ``application/x-www-form-urlencoded`` (GitHub by default)."""
        text = self.text().strip()
        if text.startswith("{") or "json" in self.content_type:
            return self.json()
        pairs = parse_qsl(text, keep_blank_values=False, max_num_fields=50)
        if not pairs:
            raise UpstreamError(f"{self.what}: body is neither JSON nor a form", retryable=True)
        return dict(pairs)


class UpstreamHttp:
    """One connection pool for every provider call (thread-safe: logins run in workers)."""

    def __init__(self, *, timeout: float, retries: int) -> None:
        self.retries = retries
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # an API that redirects is misconfigured, not followed
            transport=httpx.HTTPTransport(retries=retries),
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, url: str, *, what: str, idempotent: bool,
                params: Mapping[str, str] | None = None, data: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None,
                auth: tuple[str, str] | None = None) -> Reply:
        """Send one request; returns any answer below 500, raises UpstreamError otherwise."""
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(1, attempts + 1):
            try:
                reply = self._once(method, url, what, params, data, headers, auth)
            except UpstreamError as error:
                if not error.retryable or attempt == attempts:
                    raise
                log.info("provider call failed, retrying", extra={"what": what, "reason": error.reason})
            else:
                if reply.status < 500:
                    return reply
                if attempt == attempts:
                    raise UpstreamError(f"{what}: HTTP {reply.status}", retryable=True)
                log.info("provider call failed, retrying", extra={"what": what, "status": reply.status})
            time.sleep(_BACKOFF_SECONDS * attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _once(self, method: str, url: str, what: str, params: Mapping[str, str] | None,
              data: Mapping[str, str] | None, headers: Mapping[str, str] | None,
              auth: tuple[str, str] | None) -> Reply:
        started = time.monotonic()
        try:
            with self._client.stream(method, url, params=params, data=data, headers=headers,
                                     auth=auth) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_BODY_BYTES:
                        raise UpstreamError(f"{what}: body too large", retryable=True)
                status, content_type = response.status_code, response.headers.get("content-type", "")
        except httpx.TimeoutException:
            raise UpstreamError(f"{what}: timeout", retryable=True) from None
        except httpx.HTTPError as error:  # connection refused, reset, TLS, protocol errors
            raise UpstreamError(f"{what}: {type(error).__name__}", retryable=True) from None
        log.info("provider call", extra={"what": what, "status": status,
                                         "ms": round((time.monotonic() - started) * 1000)})
        if 300 <= status < 400:
            raise UpstreamError(f"{what}: unexpected redirect (HTTP {status})")
        return Reply(status, content_type.lower(), bytes(body), what)
