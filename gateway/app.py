"""The application factory: settings in, a FastAPI app out, every part wired once."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import anyio
import redis
from authlib.oauth2.rfc6749 import OAuth2Error
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisClusterException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles

from gateway.audit import AuditError, AuditService
from gateway.audit.relay import OutboxRelay
from gateway.audit.staff import StaffDirectory, StaffSessions
from gateway.config import Settings
from gateway.config.settings import is_loopback_host
from gateway.consent import ConsentService
from gateway.errors import BrowserError
from gateway.gate import ServiceGate
from gateway.oidc import bridge
from gateway.oidc.account import AccountService
from gateway.oidc.clients import ShopRegistry
from gateway.oidc.context import ProviderContext
from gateway.oidc.endpoints import build_router
from gateway.oidc.flow import AuthorizationFlow
from gateway.oidc.server import ProviderServer
from gateway.oidc.sessions import LoginSessions, PendingRequests
from gateway.oidc.tokens import TokenService
from gateway.policy import load_policies
from gateway.store import Store, open_store
from gateway.store.limits import RateLimitedError
from gateway.store.slots import CredentialRouting
from gateway.telemetry import Metrics, TelemetryMiddleware, hold_secret_logging_libraries
from gateway.upstream import IdentityService
from gateway.upstream.logins import UpstreamLogins
from gateway.upstream.registry import build_upstreams
from gateway.vault import Envelope, SigningKeyRing, load_key_ring, load_or_create_secret
from gateway.vault.profiles import SealedProfiles
from gateway.vault.sealing import KekSealer
from gateway.web import Renderer, WebContext, build_pages_router
from gateway.web.account import build_account_router
from gateway.web.audit_api import StaffAccess, build_audit_api
from gateway.web.console import build_console
from gateway.web.limits import RequestLimits, retry_after_header
from gateway.web.linking import build_linking_router
from gateway.web.miniprogram import build_miniprogram_router
from gateway.web.openapi import build_openapi_router
from gateway.web.rendering import TEMPLATES

log = logging.getLogger(__name__)

# A readiness check: ``None`` when fine, else a short public reason ("redis does not answer").
ReadinessCheck = Callable[[], str | None]
REDIS_DOWN = "redis does not answer"
READY_TIMEOUT_SECONDS = 2.0  # a probe gets its answer in time even while Redis hangs
RETRY_AFTER_SECONDS = 5  # an outage answer's Retry-After: Redis restarts and failovers take seconds
UNAVAILABLE = "temporarily_unavailable"

# Routes a person's browser opens: their outage answer is the error page, everything else
# (shop endpoints, the staff API, the mini-program API, health) gets RFC 6749-style JSON.
PAGE_PREFIXES = ("/authorize", "/login", "/upstream/", "/consent", "/logout", "/demo-idp/",
                 "/account", "/audit/")


def is_page(path: str) -> bool:
    if path.startswith("/audit/api/"):
        return False
    return path == "/audit" or path.startswith(PAGE_PREFIXES)


@dataclass(slots=True)
class Gateway:
    """Everything the app holds, for the CLI and tests to reach."""

    settings: Settings
    store: Store
    provider: ProviderContext
    server: ProviderServer
    metrics: Metrics
    sealer: KekSealer
    # /healthz/ready answers 503 while any of these names a reason; append more checks here.
    readiness: list[ReadinessCheck] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.readiness.insert(0, lambda: None if self.store.ping() else REDIS_DOWN)
        continuity = self.provider.audit.continuity
        if continuity is not None:
            self.readiness.append(lambda: None if continuity.problem is None else "audit continuity broken")

    def unready(self) -> list[str]:
        """The reasons this process should get no traffic now (empty: ready)."""
        reasons = []
        for check in self.readiness:
            try:
                reason = check()
            except Exception as error:  # noqa: BLE001 - a failing check is a reason, not a 500
                reason = f"readiness check failed ({type(error).__name__})"
            if reason:
                reasons.append(reason)
        return reasons


async def readiness_response(gateway: Gateway, limiter: anyio.CapacityLimiter) -> JSONResponse:
    """/healthz/ready: 200 when every readiness check passes, else 503 naming the reasons,
    within READY_TIMEOUT_SECONDS even while Redis hangs (the probe's thread is left behind).
    Its threads come from their own small limiter, so busy request threads never delay it."""
    reasons: list[str] | None = None
    with anyio.move_on_after(READY_TIMEOUT_SECONDS):
        reasons = await anyio.to_thread.run_sync(gateway.unready, abandon_on_cancel=True,
                                                 limiter=limiter)
    if reasons is None:  # a hanging Redis (paused, a network partition) answers nothing
        reasons = [f"readiness checks took over {READY_TIMEOUT_SECONDS:g} s", REDIS_DOWN]
    body: dict[str, object] = {"status": "unavailable" if reasons else "ok",
                               "redis": REDIS_DOWN not in reasons}
    headers = {"Cache-Control": "no-store"}
    if reasons:
        body["failing"] = reasons
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return JSONResponse(body, status_code=503 if reasons else 200, headers=headers)


def add_health_routes(app: FastAPI, gateway: Gateway) -> None:
    """/healthz/live (the process serves) and /healthz/ready (it should get traffic); /healthz
    is the original name of the readiness probe."""

    async def live() -> JSONResponse:
        # No Redis, no thread pool: restarting this process would not bring Redis back.
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    limiter = anyio.CapacityLimiter(4)

    async def ready() -> JSONResponse:
        return await readiness_response(gateway, limiter)

    app.add_api_route("/healthz/live", live, methods=["GET"])
    app.add_api_route("/healthz/ready", ready, methods=["GET"])
    app.add_api_route("/healthz", ready, methods=["GET"])


def refusal(renderer: Renderer, request: Request, status: int, message_key: str, description: str,
            retry_after: str) -> Response:
    """``temporarily_unavailable`` with ``Retry-After``: the error page on a person's pages,
    RFC 6749-style JSON elsewhere (telemetry adds the request id)."""
    response: Response
    if is_page(request.url.path):
        response = renderer.page(request, "error.html", status_code=status, error=UNAVAILABLE,
                                 message_key=message_key, back_url=None)
    else:
        response = JSONResponse({"error": UNAVAILABLE, "error_description": description},
                                status_code=status, headers={"Cache-Control": "no-store"})
    response.headers["Retry-After"] = retry_after
    return response


def unavailable(renderer: Renderer, request: Request, description: str) -> Response:
    """503: Redis or the audit log is out."""
    return refusal(renderer, request, 503, "error_unavailable", description, str(RETRY_AFTER_SECONDS))


def too_many_requests(renderer: Renderer, request: Request, retry_after: float) -> Response:
    """429 (RFC 6585 §4): over a rate limit (gateway/web/limits.py)."""
    return refusal(renderer, request, 429, "error_rate_limited",
                   "Too many requests. Please try again later.", retry_after_header(retry_after))


def last_resort(renderer: Renderer, request: Request, error: Exception) -> Response:
    """Whatever escaped the exception handlers, answered inside telemetry (so with a request
    id, and the connection stays open): 503 for a store or audit outage, else 500."""
    if isinstance(error, AuditError):
        log.error("audit log unavailable", extra={"route": request.url.path, "error": type(error).__name__})
        return unavailable(renderer, request, "The audit log is unavailable.")
    if isinstance(error, redis.RedisError | RedisClusterException):
        # Down, hanging past the socket timeout, loading, read-only after a failover; on a
        # cluster also a slot no node serves (redis-py raises those outside RedisError).
        log.error("redis unavailable", extra={"route": request.url.path, "error": type(error).__name__})
        return unavailable(renderer, request, "The service is temporarily unavailable.")
    # The details go to the log (type only: messages may quote input); the client learns
    # nothing about the internals.
    log.error("unhandled error", extra={"route": request.url.path, "error": type(error).__name__},
              exc_info=error)
    return JSONResponse({"error": "server_error"}, status_code=500)


def build_gateway(settings: Settings, store: Store | None = None) -> Gateway:
    """Open the store and load keys and shops; raises ConfigError on anything invalid."""
    catalogue = load_policies(settings.policies_dir)  # refuses to start on an invalid policy
    shops = ShopRegistry.load(settings.policies_dir, settings.keys_dir, settings.signing_alg)
    master_key = settings.master_key.get_secret_value() if settings.master_key else None
    kek_ring = load_key_ring(settings.keys_dir, master_key=master_key,
                             master_key_file=settings.master_key_file, demo=settings.demo,
                             create_if_missing=settings.demo)
    # Signing keys are sealed under the KEK ring: keys/ without the master key forges nothing.
    sealer = KekSealer(kek_ring)
    ring = SigningKeyRing(settings.keys_dir, sealer).load_or_create()
    store = store or open_store(settings, serving=True)
    envelope = Envelope(store, kek_ring, cache_size=settings.data_key_cache_size,
                        cache_ttl=float(settings.data_key_cache_ttl))
    profiles = SealedProfiles(store, envelope)
    audit = AuditService(store, settings.keys_dir, settings.audit_log_origin,
                         every_events=settings.audit_checkpoint_events,
                         every_seconds=settings.audit_checkpoint_seconds, sealer=sealer,
                         data_dir=settings.data_dir, shards=settings.audit_shards,
                         cold_dir=settings.audit_cold_dir, hot_entries=settings.audit_hot_entries)
    pairwise_secret = load_or_create_secret(settings.keys_dir, "pairwise", sealer)
    provider = ProviderContext(
        settings=settings,
        store=store,
        signing_keys=ring,
        shops=shops,
        tokens=TokenService(store, CredentialRouting(pairwise_secret), code_ttl=settings.code_ttl,
                            access_ttl=settings.access_token_ttl,
                            refresh_ttl=settings.refresh_token_ttl,
                            repeat_seconds=settings.refresh_repeat_seconds),
        sessions=LoginSessions(store, settings.session_ttl),
        pending=PendingRequests(store, settings.authorize_request_ttl),
        consents=ConsentService(store),
        identities=IdentityService(store, load_or_create_secret(settings.keys_dir, "link", sealer), profiles),
        profiles=profiles,
        audit=audit,
        relay=OutboxRelay(store, audit),
        pairwise_secret=pairwise_secret,
        catalogue=catalogue,
        pseudonym_secret=load_or_create_secret(settings.keys_dir, "pseudonym", sealer),
    )
    provider.tokens.on_replay = lambda person_id, client_id: provider.record(
        "token_revoked", actor_type="system", actor_id="gateway", person=person_id, shop=client_id,
        outcome="denied")  # a replayed code or refresh token ended its whole grant
    # Before anything is written: a Redis that lost data is refused, not built upon.
    continuity = audit.continuity
    if continuity is not None and continuity.check() is not None:
        return Gateway(settings, store, provider, ProviderServer(provider), Metrics(), sealer)
    for shop in shops:  # every start records which policy versions it serves
        provider.record("policy_loaded", actor_type="system", actor_id="gateway", shop=shop.client_id,
                        policy_version=shop.config.policy.version)
    return Gateway(settings, store, provider, ProviderServer(provider), Metrics(), sealer)


def metrics_allowed(settings: Settings, request: Request) -> bool:
    expected = settings.metrics_token_sha256
    if expected:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        return scheme.lower() == "bearer" and hmac.compare_digest(digest, expected)
    return request.client is not None and is_loopback_host(request.client.host)


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    hold_secret_logging_libraries()
    gateway = build_gateway(settings, store)
    owns_store = store is None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        checkpointing = gateway.provider.audit.start_checkpointing(stop)
        relaying = gateway.provider.relay.start(stop)
        if gateway.provider.audit.continuity is not None:
            gateway.provider.audit.continuity.start(stop)
        yield
        stop.set()
        checkpointing.join(timeout=10)
        # Held only if signing outlived the join: free it now rather than after its TTL.
        gateway.provider.audit.checkpointer.release_lock()
        relaying.join(timeout=10)
        if upstreams.http is not None:
            await upstreams.http.aclose()
        if owns_store:
            gateway.store.close()

    app = FastAPI(title="Consent Gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.gateway = gateway
    provider = gateway.provider

    # The configured upstream providers (and, in demo mode only, the demo provider).
    upstreams = build_upstreams(settings, gateway.store, provider.endpoint("/demo-idp/authorize"),
                                logos={p.stem for p in (TEMPLATES.parent / "static" / "logos").glob("*.svg")})
    connectors, demo_provider = upstreams.connectors, upstreams.demo

    flow = AuthorizationFlow(provider, gateway.server)
    renderer = Renderer()
    web = WebContext(
        provider=provider, server=gateway.server, flow=flow,
        logins=UpstreamLogins(gateway.store, connectors, settings.issuer),
        renderer=renderer, csrf_secret=load_or_create_secret(settings.keys_dir, "csrf", gateway.sealer),
        demo=demo_provider,
    )
    app.include_router(build_router(provider, gateway.server, flow))
    app.include_router(build_pages_router(web))
    app.include_router(build_account_router(web, AccountService(provider)))
    staff_access = StaffAccess(StaffDirectory(settings.staff), StaffSessions(gateway.store))
    app.include_router(build_audit_api(provider, provider.audit, staff_access, web.csrf_secret))
    app.include_router(build_console(provider, provider.audit, staff_access, renderer, web.csrf_secret))
    app.include_router(build_miniprogram_router(provider, gateway.server, upstreams.mini_programs))
    app.include_router(build_linking_router(web, flow))
    app.include_router(build_openapi_router(settings.issuer))  # GET /openapi.json, written out
    app.mount("/static", StaticFiles(directory=TEMPLATES.parent / "static"), name="static")

    add_health_routes(app, gateway)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        # Metrics name routes, shops and rates: not for the public. With a token configured
        # the scraper sends it as a bearer token; without one only loopback may read them.
        if not metrics_allowed(settings, request):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(BrowserError)
    async def browser_error(request: Request, error: BrowserError) -> Response:
        return renderer.page(request, "error.html", status_code=error.status_code,
                             error=error.error, message=error.description, back_url=None)

    async def outage(request: Request, error: Exception) -> Response:
        # Nothing is released that could not be recorded (AuditError), nor without Redis: the
        # request fails as a whole (503) and the client retries. RedisErrors raised in
        # authlib's hooks come here too (authlib handles only OAuth2Error).
        return last_resort(renderer, request, error)

    app.add_exception_handler(AuditError, outage)
    app.add_exception_handler(redis.RedisError, outage)
    app.add_exception_handler(RedisClusterException, outage)

    @app.exception_handler(RateLimitedError)
    async def rate_limited(request: Request, error: RateLimitedError) -> Response:
        return too_many_requests(renderer, request, error.retry_after)

    @app.exception_handler(OAuth2Error)
    async def oauth_error(_: Request, error: OAuth2Error) -> Response:
        return bridge.error_response(error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        # Only reached for an error in the middleware itself (telemetry answers the rest with
        # last_resort). The details go to the log (type only: messages may quote input); the
        # client learns nothing about the internals.
        log.error("unhandled error", extra={"route": request.url.path, "error": type(error).__name__},
                  exc_info=error)
        return JSONResponse({"error": "server_error"}, status_code=500)

    add_middleware_stack(app, gateway, renderer)
    return app


def add_middleware_stack(app: FastAPI, gateway: Gateway, renderer: Renderer) -> None:
    """Outermost first: telemetry, the service gate, rate limits."""
    settings, provider = gateway.settings, gateway.provider
    # Inside the service gate (nothing touches a Redis that may have lost data) and inside
    # telemetry (refusals are counted and carry a request id).
    if settings.rate_limits:
        app.add_middleware(RequestLimits, limits=gateway.store.limits, settings=settings,
                           refuse=partial(too_many_requests, renderer))
    continuity = provider.audit.continuity
    if continuity is not None:
        app.add_middleware(
            ServiceGate, problem=lambda: continuity.problem, is_page=is_page,
            page=lambda request, message: renderer.page(
                request, "error.html", status_code=503, error="temporarily_unavailable",
                message=message, back_url=None))
    app.add_middleware(TelemetryMiddleware, metrics=gateway.metrics, on_error=partial(last_resort, renderer))
