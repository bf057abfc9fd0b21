"""Building the configured providers: settings in, connectors out (called once by the app).

Secrets are read here, at start-up, so a missing one stops the gateway with one line
naming it (:class:`ConfigError`) instead of failing a person's sign-in later. Nothing is
fetched from the providers yet: discovery and keys are fetched on first use, so the
gateway starts while a provider is down.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from gateway.config import Settings
from gateway.config.settings import (
    AlipayProviderSettings,
    OAuth2ProviderSettings,
    OIDCProviderSettings,
    ProviderSettings,
    WeChatProviderSettings,
)
from gateway.errors import ConfigError
from gateway.store import Store
from gateway.upstream import alipay
from gateway.upstream.base import Connector
from gateway.upstream.credentials import read_secret
from gateway.upstream.demo import DemoConnector, DemoProvider
from gateway.upstream.http import ProviderHttp, UpstreamHttp
from gateway.upstream.isolation import CircuitBreaker
from gateway.upstream.listing import Listing
from gateway.upstream.oauth2 import (
    GENERIC_FIELDS,
    GITHUB_ENDPOINTS,
    GITHUB_FIELDS,
    GITHUB_SCOPES,
    OAuth2Connector,
    OAuth2Endpoints,
)
from gateway.upstream.oidc import OIDC_FIELDS, OIDCConnector
from gateway.upstream.profile import FieldMap, check_field_map
from gateway.upstream.wechat import WeChatConnector, WeChatMiniProgram

log = logging.getLogger(__name__)

_DEFAULT_LOGOS = {"oidc": "openid", "oauth2": "oauth", "wechat": "wechat", "alipay": "alipay"}


@dataclass(slots=True)
class Upstreams:
    """Every configured provider: browser sign-ins, mini programs, and the demo provider."""

    connectors: dict[str, Connector] = field(default_factory=dict)
    mini_programs: dict[str, WeChatMiniProgram] = field(default_factory=dict)
    demo: DemoProvider | None = None
    http: UpstreamHttp | None = None


def _fields(defaults: FieldMap, configured: dict[str, list[str]] | None, where: str) -> FieldMap:
    """The default mapping, with the configured fields replacing theirs (``[]`` removes one)."""
    if configured is None:
        return defaults
    try:
        check_field_map(configured, where)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    merged = dict(defaults) | {name: tuple(paths) for name, paths in configured.items()}
    return {name: paths for name, paths in merged.items() if paths}


def _listing(config: ProviderSettings, logos: Collection[str] | None) -> Listing:
    logo = config.logo
    if logo is None:
        preset = getattr(config, "preset", None)
        logo = preset or _DEFAULT_LOGOS[config.kind]
    if logos is not None and logo not in logos:
        raise ConfigError(f"provider {config.id}: no logo {logo!r} in gateway/web/static/logos/")
    return Listing(config.id, config.name, config.name_zh, logo)


def _provider_http(http: UpstreamHttp, provider_id: str, settings: Settings) -> ProviderHttp:
    """The provider's own call limit and circuit breaker, on the shared connection pool."""
    return http.for_provider(provider_id, concurrency=settings.upstream_concurrency,
                             breaker=CircuitBreaker(provider_id,
                                                    failures=settings.upstream_breaker_failures,
                                                    cooldown=settings.upstream_breaker_cooldown))


def _oidc(config: OIDCProviderSettings, settings: Settings, http: ProviderHttp,
          listing: Listing) -> OIDCConnector:
    return OIDCConnector(
        listing, issuer=config.issuer, client_id=config.client_id,
        client_secret=read_secret(config.client_secret, settings.keys_dir,
                                  f"provider {config.id} client_secret"),
        scopes=config.scopes, auth_method=config.token_endpoint_auth_method,
        algorithms=list(config.id_token_algorithms), userinfo=config.userinfo,
        fields=_fields(OIDC_FIELDS, config.fields, f"provider {config.id} fields"),
        leeway=config.leeway, http=http, metadata_ttl=settings.upstream_metadata_ttl,
        failure_ttl=settings.upstream_failure_ttl,
    )


def _oauth2(config: OAuth2ProviderSettings, settings: Settings, http: ProviderHttp,
            listing: Listing) -> OAuth2Connector:
    github = config.preset == "github"
    preset = GITHUB_ENDPOINTS if github else None
    endpoints = OAuth2Endpoints(
        authorize_url=config.authorize_url or (preset.authorize_url if preset else ""),
        token_url=config.token_url or (preset.token_url if preset else ""),
        profile_url=config.profile_url or (preset.profile_url if preset else ""),
        emails_url=config.emails_url or (preset.emails_url if preset else None),
        profile_headers=dict(preset.profile_headers) if preset else {},
    )
    return OAuth2Connector(
        listing, endpoints=endpoints, client_id=config.client_id,
        client_secret=read_secret(config.client_secret, settings.keys_dir,
                                  f"provider {config.id} client_secret"),
        scopes=config.scopes or (list(GITHUB_SCOPES) if github else []),
        scope_separator=config.scope_separator, auth_method=config.token_endpoint_auth_method,
        pkce=config.pkce, subject_field=config.subject_field,
        fields=_fields(GITHUB_FIELDS if github else GENERIC_FIELDS, config.fields,
                       f"provider {config.id} fields"),
        http=http,
    )


def _alipay(config: AlipayProviderSettings, settings: Settings, http: ProviderHttp,
            listing: Listing) -> alipay.AlipayConnector:
    where = f"provider {config.id}"
    private = read_secret(config.app_private_key, settings.keys_dir, f"{where} app_private_key")
    public = read_secret(config.alipay_public_key, settings.keys_dir, f"{where} alipay_public_key")
    try:
        private_key = alipay.load_private_key(private.get_secret_value())
    except alipay.AlipayKeyError as error:
        raise ConfigError(f"{where} app_private_key: {error}") from None
    try:
        public_key = alipay.load_public_key(public.get_secret_value())
    except alipay.AlipayKeyError as error:
        raise ConfigError(f"{where} alipay_public_key: {error}") from None
    sandbox = config.sandbox
    return alipay.AlipayConnector(
        listing, app_id=config.app_id, private_key=private_key, alipay_public_key=public_key,
        scope=config.scope,
        gateway_url=config.gateway_url or (alipay.SANDBOX_GATEWAY_URL if sandbox else alipay.GATEWAY_URL),
        authorize_url=config.authorize_url or (
            alipay.SANDBOX_AUTHORIZE_URL if sandbox else alipay.AUTHORIZE_URL),
        http=http,
    )


def build_upstreams(settings: Settings, store: Store, demo_authorize_endpoint: str,
                    logos: Collection[str] | None = None) -> Upstreams:
    """The enabled providers of ``settings``; raises ConfigError on a missing secret or key.

    ``logos`` is the set of logo names available to the sign-in page (None: not checked).
    """
    upstreams = Upstreams()
    if settings.demo:
        # Demo mode only: a simulated provider anyone can sign in to as anyone.
        log.warning("DEMO MODE: the built-in demo sign-in is enabled; never use in production")
        upstreams.demo = DemoProvider(store)
        upstreams.connectors["demo"] = DemoConnector(store, demo_authorize_endpoint)
    enabled = [config for config in settings.providers if config.enabled]
    if not enabled:
        return upstreams
    http = UpstreamHttp(timeout=settings.upstream_timeout, retries=settings.upstream_retries,
                        deadline=settings.upstream_deadline)
    upstreams.http = http
    for config in enabled:
        listing = _listing(config, logos)
        provider_http = _provider_http(http, config.id, settings)
        if isinstance(config, OIDCProviderSettings):
            upstreams.connectors[config.id] = _oidc(config, settings, provider_http, listing)
        elif isinstance(config, OAuth2ProviderSettings):
            upstreams.connectors[config.id] = _oauth2(config, settings, provider_http, listing)
        elif isinstance(config, AlipayProviderSettings):
            upstreams.connectors[config.id] = _alipay(config, settings, provider_http, listing)
        else:
            _wechat(config, settings, provider_http, listing, upstreams)
    log.info("upstream providers", extra={"providers": sorted(upstreams.connectors),
                                          "mini_programs": sorted(upstreams.mini_programs)})
    return upstreams


def _wechat(config: WeChatProviderSettings, settings: Settings, http: ProviderHttp,
            listing: Listing, upstreams: Upstreams) -> None:
    secret = read_secret(config.secret, settings.keys_dir, f"provider {config.id} secret")
    if config.product == "mini_program":
        upstreams.mini_programs[config.id] = WeChatMiniProgram(
            config.id, app_id=config.app_id, secret=secret, shops=config.shops,
            unionid_namespace=config.unionid_namespace, api_base=config.api_base, http=http)
        return
    upstreams.connectors[config.id] = WeChatConnector(
        listing, product=config.product, app_id=config.app_id, secret=secret, scope=config.scope,
        unionid_namespace=config.unionid_namespace, api_base=config.api_base,
        open_base=config.open_base, http=http)
