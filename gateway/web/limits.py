"""Rate limits at the edge: which requests count against which bucket (docs/threat-model.md).

Two kinds, both backed by Redis buckets (:mod:`gateway.store.limits`):

- *Request* limits, spent before the request runs, where an unauthenticated request costs the
  gateway storage: authorization requests and upstream sign-in starts park state for ten
  minutes (per IP), mini-program logins call WeChat (per IP; per shop once the shop has
  authenticated, in the route). One round trip on those routes only.
- *Failure* limits, spent only when a request failed to authenticate: a shop's client
  authentication (401 ``invalid_client`` on /token, /revoke, /introspect, /par and the
  mini-program login, per IP and per client_id from that IP) and staff tokens (per IP). A
  request with good credentials from a subject that never failed costs no round trip. Once
  a subject has failed in a worker it is *suspect* there: its next requests first ask Redis
  whether its buckets allow one more (spending nothing), and a bucket that refuses is
  remembered in the worker until it allows again, so a blocked guesser costs nothing.
  Past the burst an attacker is answered only the requests already in flight when the
  bucket emptied, plus one per worker that had not yet seen it fail. Per client_id *alone*
  is deliberately not a bucket: anyone could then lock a shop out by failing in its name.

Consent-centre writes are limited per person inside the account routes (only there is the
person known), and mini-program logins and pushed requests per shop once it has
authenticated: :func:`gateway.store.limits.spend`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

import redis
from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import Settings
from gateway.oidc import bridge
from gateway.store.limits import Limit, RateLimits, Spent

log = logging.getLogger(__name__)

BLOCKLIST_SIZE = 10_000  # remembered blocks per worker; beyond that, Redis decides again
INVALID_CLIENT = re.compile(rb'\{\s*"error"\s*:\s*"invalid_client"')
SUSPECT_SECONDS = 600.0  # how long a subject that failed is checked before it is served


def retry_after_header(seconds: float) -> str:
    return str(max(1, int(seconds + 0.999)))


def client_address(scope: Scope) -> str:
    """The subject for per-IP limits: the address uvicorn reports (after its proxy-header
    rules); IPv6 by /64, since one subscriber gets a whole /64 and picks addresses freely."""
    client = scope.get("client")
    host = client[0] if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def presented_client_id(scope: Scope, body: bytes) -> str | None:
    """The client_id a shop claimed: HTTP Basic (RFC 6749 §2.3.1, form-encoded) or the form.
    Only used to name a bucket, so anything unreadable is simply no client_id."""
    try:
        basic = bridge.basic_credentials(_header(scope, b"authorization"))
        if basic is not None:
            return unquote(basic[0])[:200] or None
        fields = bridge.parse_fields(body.decode("utf-8"), "form")
    except (OAuth2Error, UnicodeDecodeError):
        return None
    return next((value[:200] for name, value in fields if name == "client_id"), None)


@dataclass(frozen=True, slots=True)
class Routes:
    """Requests a limit covers: a method and an exact path or a path pattern."""

    methods: frozenset[str]
    paths: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None

    def cover(self, method: str, path: str) -> bool:
        if method not in self.methods:
            return False
        return path in self.paths or (self.pattern is not None and self.pattern.fullmatch(path) is not None)


SIGN_IN_STARTS = Routes(frozenset({"GET", "POST"}), frozenset({"/authorize"}),
                        re.compile(r"/upstream/[^/]+/start"))
MINI_PROGRAM_LOGINS = Routes(frozenset({"POST"}), pattern=re.compile(r"/miniprogram/[^/]+/login"))
CLIENT_AUTHENTICATION = Routes(frozenset({"POST"}), frozenset({"/token", "/revoke", "/introspect", "/par"}),
                               MINI_PROGRAM_LOGINS.pattern)
STAFF_API = Routes(frozenset({"GET", "POST"}), pattern=re.compile(r"/audit/api/.*"))
STAFF_SIGN_IN = Routes(frozenset({"POST"}), frozenset({"/audit/login"}))


def failed_authentication(status: int, head: bytes) -> bool:
    """401, or RFC 6749's 400 ``invalid_client`` (a bad client assertion, a form-posted
    client_id naming another shop): the start of the JSON body says which."""
    return status == 401 or (status == 400 and INVALID_CLIENT.match(head) is not None)


class Deadlines:
    """Per worker: until when each bucket is known to refuse (or its subject is suspect)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def wait(self, keys: Iterable[str]) -> float:
        now = time.monotonic()
        return max((self._until.get(key, 0.0) - now for key in keys), default=0.0)

    def block(self, keys: Iterable[str], seconds: float) -> None:
        if len(self._until) >= BLOCKLIST_SIZE:
            now = time.monotonic()
            self._until = {k: until for k, until in self._until.items() if until > now}
            if len(self._until) >= BLOCKLIST_SIZE:
                self._until.clear()
        until = time.monotonic() + seconds
        for key in keys:
            self._until[key] = max(until, self._until.get(key, 0.0))


class RequestLimits:
    """Pure ASGI middleware: routes outside the tables above pass through untouched."""

    def __init__(self, app: ASGIApp, limits: RateLimits, settings: Settings,
                 refuse: Callable[[Request, float], Response]) -> None:
        self.app = app
        self.limits = limits
        self.refuse = refuse
        self.max_body = settings.max_body_bytes
        self.sign_in = Limit("authorize-ip", settings.rate_limit_authorize_per_ip)
        self.mini_program = Limit("miniprogram-ip", settings.rate_limit_miniprogram_per_ip)
        self.client_per_ip = Limit("clientfail-ip", settings.rate_limit_client_failures_per_ip)
        self.client_per_client = Limit("clientfail-client", settings.rate_limit_client_failures_per_client)
        self.staff_per_ip = Limit("stafffail-ip", settings.rate_limit_staff_failures_per_ip)
        self.blocks = Deadlines()
        self.suspects = Deadlines()  # failure buckets of subjects that failed here lately

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        requests = self._request_limits(method, path)
        failures = self._failure_limits(scope, method, path)
        if not requests and failures is None:
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        hits: list[tuple[Limit, str]] = [(limit, address) for limit in requests]
        if failures is not None:
            body, receive = await _buffered(receive, self.max_body)
            client_id = presented_client_id(scope, body) if failures is self.client_per_ip else None
            hits += [(failures, address)]
            if client_id is not None:
                hits.append((self.client_per_client, f"{client_id}\n{address}"))
        wait = self.blocks.wait(self._names(hits))
        failure_hits = hits[len(requests):]
        if wait <= 0 and failure_hits and self.suspects.wait(self._names(failure_hits)) > 0:
            peeked = await run_in_threadpool(self.limits.peek, failure_hits)
            self._remember(failure_hits, peeked)
            wait = peeked.retry_after
        if wait <= 0 and requests:
            request_hits = hits[:len(requests)]
            spent = await run_in_threadpool(self.limits.take, request_hits)
            self._remember(request_hits, spent)
            wait = spent.retry_after
        if wait > 0:
            await self.refuse(Request(scope), wait)(scope, receive, send)
            return
        status, head = 0, b""

        async def watch(message: Message) -> None:
            nonlocal status, head
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 400 and len(head) < 64:
                head += message.get("body", b"")[:64]
            await send(message)

        await self.app(scope, receive, watch)
        if failures is not None and failed_authentication(status, head):
            self.suspects.block(self._names(failure_hits), SUSPECT_SECONDS)
            await self._charge(failure_hits)

    def _request_limits(self, method: str, path: str) -> list[Limit]:
        if SIGN_IN_STARTS.cover(method, path):
            return [self.sign_in]
        if MINI_PROGRAM_LOGINS.cover(method, path):
            return [self.mini_program]
        return []

    def _failure_limits(self, scope: Scope, method: str, path: str) -> Limit | None:
        if CLIENT_AUTHENTICATION.cover(method, path):
            return self.client_per_ip
        # A staff API request without a token is not a guess (a console whose session ended).
        if STAFF_SIGN_IN.cover(method, path) or (STAFF_API.cover(method, path)
                                                 and _header(scope, b"authorization")):
            return self.staff_per_ip
        return None

    async def _charge(self, hits: list[tuple[Limit, str]]) -> None:
        try:
            spent = await run_in_threadpool(self.limits.take, hits)
        except redis.RedisError as error:  # the answer is sent; the next failure counts again
            log.warning("rate limit not charged", extra={"error": type(error).__name__})
            return
        if self._remember(hits, spent):
            log.warning("authentication failures over the limit", extra={"limit": hits[0][0].name})

    def _remember(self, hits: list[tuple[Limit, str]], spent: Spent) -> bool:
        """Remember each bucket that refuses from now on (refused, or emptied by this request),
        so this worker refuses without asking Redis until it allows again."""
        blocked = False
        for index, name in enumerate(self._names(hits)):
            seconds = spent.blocked_for(index)
            if seconds > 0:
                self.blocks.block([name], seconds)
                blocked = True
        return blocked

    @staticmethod
    def _names(hits: list[tuple[Limit, str]]) -> list[str]:
        return [f"{limit.name}\n{subject}" for limit, subject in hits]


async def _buffered(receive: Receive, limit: int) -> tuple[bytes, Receive]:
    """Read the request body (up to ``limit`` + 1 bytes) and a ``receive`` that replays it and
    then goes on with the rest, so the route reads the same bytes and enforces its own limit."""
    messages: list[Message] = []
    size = 0
    while size <= limit:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return body, replay
