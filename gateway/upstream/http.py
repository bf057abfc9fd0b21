"""Calls to providers: async HTTP, a total deadline per call, retries, clear failures.

Every call runs on one ``httpx.AsyncClient``: a sign-in waiting on a provider is a
suspended coroutine, not a worker thread, so a slow provider cannot fill the thread pool
that every other route (``/healthz``, ``/token``, the consent centre) needs.

Every call has a **total deadline** (``upstream_deadline``): connecting, sending, every
retry and back-off and reading the whole body must finish within it. httpx's own timeout
(``upstream_timeout``) applies to each socket operation only, so a provider trickling one
byte a second would never trip it; the deadline cancels the call instead.

Every failure becomes an :class:`UpstreamError` saying what failed (never the URL, which
for WeChat carries the app secret and the code in its query): a timeout, a refused
connection, a 5xx or a body that is not what was promised is ``retryable`` (the shop is
told ``temporarily_unavailable``); anything else is the provider saying no.

Retries: the transport retries a failed *connection* ``retries`` times for every request
(nothing was sent, so it is safe even for a code exchange); reads (``idempotent=True``:
discovery, JWKS, profiles) are also retried after a timeout or a 5xx. A code exchange is
never sent twice, since a code works once and the second answer would be "code used".

Each provider's calls go through its :class:`ProviderHttp`: a limit on calls in progress
and a circuit breaker (gateway/upstream/isolation.py), so one provider's trouble is
refused quickly instead of piling up.

Bodies are parsed whatever their Content-Type: WeChat serves JSON as ``text/plain``,
GitHub form-encodes its token response unless asked for JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx

from gateway.upstream.base import ProviderUnavailableError, UpstreamError
from gateway.upstream.isolation import CallLimit, CircuitBreaker

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
    """One connection pool for every provider call, per event loop.

    The gateway serves on one event loop; the test client runs each request on a loop of
    its own, and connections cannot move between loops, so each loop gets its own client.
    """

    def __init__(self, *, timeout: float, retries: int, deadline: float) -> None:
        self.retries = retries
        self.deadline = deadline
        self._timeout = timeout
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None  # loading the CA bundle takes ~50 ms: once
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                if self._tls is None:
                    self._tls = httpx.create_ssl_context()
                client = httpx.AsyncClient(
                    timeout=httpx.Timeout(self._timeout),
                    follow_redirects=False,  # an API that redirects is misconfigured, not followed
                    transport=httpx.AsyncHTTPTransport(retries=self.retries, verify=self._tls),
                    verify=self._tls,
                    headers={"User-Agent": USER_AGENT},
                )
                self._clients[loop] = client
            return client

    async def aclose(self) -> None:
        """Close this loop's connections (the others' loops are gone with theirs)."""
        with self._lock:
            client = self._clients.pop(asyncio.get_running_loop(), None)
            self._clients.clear()
        if client is not None:
            await client.aclose()

    def for_provider(self, provider_id: str, *, concurrency: int, breaker: CircuitBreaker) -> ProviderHttp:
        return ProviderHttp(self, provider_id, CallLimit(concurrency), breaker)

    async def request(self, method: str, url: str, *, what: str, idempotent: bool,
                      params: Mapping[str, str] | None = None, data: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None,
                      auth: tuple[str, str] | None = None) -> Reply:
        """Send one request; returns any answer below 500, raises UpstreamError otherwise.

        The whole of it, retries included, ends within ``deadline`` seconds."""
        try:
            async with asyncio.timeout(self.deadline):
                return await self._attempts(method, url, what, idempotent, params, data, headers, auth)
        except TimeoutError:
            raise UpstreamError(f"{what}: no complete answer within {self.deadline:g} s",
                                retryable=True) from None

    async def _attempts(self, method: str, url: str, what: str, idempotent: bool,
                        params: Mapping[str, str] | None, data: Mapping[str, str] | None,
                        headers: Mapping[str, str] | None, auth: tuple[str, str] | None) -> Reply:
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(1, attempts + 1):
            try:
                reply = await self._once(method, url, what, params, data, headers, auth)
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
            await asyncio.sleep(_BACKOFF_SECONDS * attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _once(self, method: str, url: str, what: str, params: Mapping[str, str] | None,
                    data: Mapping[str, str] | None, headers: Mapping[str, str] | None,
                    auth: tuple[str, str] | None) -> Reply:
        started = time.monotonic()
        try:
            async with self._client().stream(method, url, params=params, data=data, headers=headers,
                                             auth=auth) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
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


class ProviderHttp:
    """One provider's calls: at most ``limit`` in progress, and through its circuit breaker.

    A call refused by either fails at once with :class:`ProviderUnavailableError`. A call
    that fails retryably (deadline, timeout, connection error, 5xx, an oversized body)
    counts against the breaker; any answer below 500 counts as the provider being up, even
    one that says no (a used code is the person's problem, not the provider's health).
    """

    def __init__(self, http: UpstreamHttp, provider_id: str, limit: CallLimit,
                 breaker: CircuitBreaker) -> None:
        self.provider_id = provider_id
        self.limit = limit
        self.breaker = breaker
        self._http = http

    def available(self) -> bool:
        return not self.breaker.is_open()

    async def request(self, method: str, url: str, *, what: str, idempotent: bool,
                      params: Mapping[str, str] | None = None, data: Mapping[str, str] | None = None,
                      headers: Mapping[str, str] | None = None,
                      auth: tuple[str, str] | None = None) -> Reply:
        if not self.limit.try_acquire():
            raise ProviderUnavailableError(f"{what}: not called, {self.limit.limit} calls to "
                                           f"{self.provider_id} already in progress")
        try:
            admission = self.breaker.admit(what)
            try:
                reply = await self._http.request(method, url, what=what, idempotent=idempotent,
                                                 params=params, data=data, headers=headers, auth=auth)
            except UpstreamError as error:
                if error.retryable:
                    admission.failed()
                else:
                    admission.succeeded()
                raise
            except BaseException:  # cancelled (the request was abandoned): no verdict
                admission.abandoned()
                raise
            admission.succeeded()
            return reply
        finally:
            self.limit.release()
