"""Gateway settings.

Sources, strongest first: explicit arguments, ``GATEWAY_*`` environment variables, the TOML
file named by ``GATEWAY_CONFIG``, then the defaults below. A bad value stops start-up with
one line naming the setting (:func:`load_settings`), never a traceback.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.config.staff import StaffMember
from gateway.errors import ConfigError

ENV_PREFIX = "GATEWAY_"
CONFIG_FILE_VARIABLE = "GATEWAY_CONFIG"


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses, where plain http is tolerable (RFC 8252 §8.3)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- upstream providers (docs/providers.md) --------------------------------------------

PROVIDER_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,31}$"
_KEY_FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"


def check_https_url(value: str, what: str = "") -> str:
    """An absolute https URL (plain http only on loopback, RFC 8252 §8.3) without a fragment:
    the rule for redirect URIs (RFC 9700 §2.1, RFC 6749 §3.1.2) and upstream endpoints."""
    name = f"{what} {value!r}" if what else repr(value)
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{name} must be an absolute https URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{name} must use https (plain http is accepted only on loopback)")
    if parts.fragment:
        raise ValueError(f"{name} must not have a fragment")
    return value


def _provider_url(value: str) -> str:
    """An upstream endpoint."""
    return check_https_url(value)


class SecretRef(BaseModel):
    """Where a provider secret lives: an environment variable, or a file under ``keys/``.

    Secrets are never written in the settings file itself (``{ env = "NAME" }`` or
    ``{ file = "wechat-web.secret" }``); the file name cannot leave the keys directory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    file: str | None = Field(default=None, pattern=_KEY_FILE_PATTERN, max_length=200)

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


class _ProviderBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=PROVIDER_ID_PATTERN, description="Appears in the callback URL.")
    name: str = Field(min_length=1, max_length=40, description="Shown on the sign-in page.")
    name_zh: str | None = Field(default=None, max_length=40)
    logo: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,32}$",
                             description="A logo in gateway/web/static/logos/ (without .svg).")
    enabled: bool = True


FieldMapping = dict[str, list[str]]


class OIDCProviderSettings(_ProviderBase):
    """Any OpenID Connect provider, found through discovery."""

    kind: Literal["oidc"]
    issuer: str
    client_id: str = Field(min_length=1, max_length=255)
    client_secret: SecretRef
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"  # noqa: S105 - a protocol value, not a password
    )
    id_token_algorithms: list[Literal["RS256", "PS256", "ES256", "EdDSA"]] = Field(
        default_factory=lambda: ["RS256", "ES256"], min_length=1  # type: ignore[arg-type]
    )
    userinfo: bool = Field(default=True, description="Fetch the userinfo endpoint after the token.")
    fields: FieldMapping | None = Field(default=None, description="Catalogue field -> claim paths.")
    leeway: int = Field(default=60, ge=0, le=300, description="Clock skew allowed (s).")

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        if urlsplit(value).query:
            raise ValueError("the issuer must not have a query")
        return _provider_url(value)

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, scopes: list[str]) -> list[str]:
        if "openid" not in scopes:
            raise ValueError("scopes must include 'openid'")
        return scopes


class OAuth2ProviderSettings(_ProviderBase):
    """A plain OAuth 2.0 provider with a profile URL (``preset = "github"`` fills the URLs)."""

    kind: Literal["oauth2"]
    preset: Literal["github"] | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    profile_url: str | None = None
    emails_url: str | None = Field(default=None, description="GitHub-style list of e-mails.")
    client_id: str = Field(min_length=1, max_length=255)
    client_secret: SecretRef
    scopes: list[str] = Field(default_factory=list)
    scope_separator: str = Field(default=" ", max_length=1)
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_post"  # noqa: S105 - a protocol value, not a password
    )
    pkce: bool = True
    subject_field: str = Field(default="id", min_length=1, max_length=64)
    fields: FieldMapping | None = None

    @field_validator("authorize_url", "token_url", "profile_url", "emails_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _provider_url(value)

    @model_validator(mode="after")
    def _complete(self) -> OAuth2ProviderSettings:
        if self.preset is None and not (self.authorize_url and self.token_url and self.profile_url):
            raise ValueError("authorize_url, token_url and profile_url are required without a preset")
        return self


class WeChatProviderSettings(_ProviderBase):
    """One WeChat app: website QR login, official-account pages, or a mini program."""

    kind: Literal["wechat"]
    product: Literal["website", "official_account", "mini_program"]
    app_id: str = Field(pattern=r"^wx[0-9A-Za-z]{8,32}$")
    secret: SecretRef
    scope: Literal["snsapi_base", "snsapi_userinfo"] = Field(
        default="snsapi_userinfo", description="Official account only.")
    unionid_namespace: str = Field(
        default="wechat", pattern=r"^[a-z0-9-]{1,32}$",
        description="Apps sharing one open-platform account share people by unionid here.")
    shops: list[str] = Field(default_factory=list,
                             description="Mini program: the shops (client ids) that may use it.")
    api_base: str = "https://api.weixin.qq.com"
    open_base: str = "https://open.weixin.qq.com"

    @field_validator("api_base", "open_base")
    @classmethod
    def _bases(cls, value: str) -> str:
        return _provider_url(value).rstrip("/")

    @model_validator(mode="after")
    def _shops_only_for_mini_programs(self) -> WeChatProviderSettings:
        if self.product == "mini_program" and not self.shops:
            raise ValueError("a mini program needs 'shops': the client ids allowed to use it")
        if self.product != "mini_program" and self.shops:
            raise ValueError("'shops' applies to mini programs only")
        return self


class AlipayProviderSettings(_ProviderBase):
    """Alipay web authorization through the signed open-API gateway (RSA2, public-key mode)."""

    kind: Literal["alipay"]
    app_id: str = Field(pattern=r"^[0-9]{8,32}$")
    app_private_key: SecretRef
    alipay_public_key: SecretRef
    scope: Literal["auth_user", "auth_base"] = "auth_user"
    sandbox: bool = False
    gateway_url: str | None = None
    authorize_url: str | None = None

    @field_validator("gateway_url", "authorize_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _provider_url(value)


ProviderSettings = Annotated[
    OIDCProviderSettings | OAuth2ProviderSettings | WeChatProviderSettings | AlipayProviderSettings,
    Field(discriminator="kind"),
]


# -- rate limits (docs/threat-model.md, "Rate limits") ----------------------------------


class RateLimit(BaseModel):
    """``count`` requests per ``per_seconds`` on average, ``burst`` of them at once.

    In TOML ``rate_limit_authorize_per_ip = {count = 300, per_seconds = 60, burst = 150}``; in
    the environment the same as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, le=1_000_000)
    per_seconds: float = Field(gt=0, le=86400)
    burst: int = Field(ge=1, le=1_000_000)


class Settings(BaseSettings):
    """Everything an operator can set. Field names map to ``GATEWAY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    issuer: str = Field(
        default="http://127.0.0.1:8000",
        description="Issuer identifier and public base URL (https; http only on loopback).",
    )
    redis_url: str = Field(
        default="",
        description="redis:// or rediss:// URL; empty starts an embedded Redis in data_dir.",
    )
    # Sentinel mode (docs/operations.md, "Redis Sentinel"): the Sentinels name the primary,
    # and after a failover the gateway finds the new one without a restart.
    redis_sentinels: list[str] = Field(
        default_factory=list,
        description="host:port of each Sentinel; when set, redis_url is not used.")
    redis_sentinel_master: str = Field(default="mymaster", pattern=r"^[A-Za-z0-9._-]{1,64}$",
                                       description="The name the Sentinels monitor the primary under.")
    redis_sentinel_db: int = Field(default=0, ge=0, le=15)
    # Cluster mode (docs/operations.md, "Redis Cluster"): redis_url names one node, the client
    # discovers the others and follows MOVED/ASK redirections.
    redis_cluster: bool = Field(
        default=False,
        description="redis_url is one node of a Redis Cluster; the others are discovered from it.")
    redis_wait_replicas: int = Field(
        default=0, ge=0, le=5,
        description="Replicas a consent change or audit append must reach (WAIT) before it is "
                    "acknowledged; 0: do not wait.")
    redis_wait_timeout_ms: int = Field(default=1000, ge=10, le=10000,
                                       description="How long such a write waits for its replicas.")
    redis_key_prefix: str = Field(default="cg:", min_length=1, max_length=64)
    redis_assume_persistent: bool = Field(
        default=False,
        description="Trust that Redis persists data when it refuses CONFIG GET (managed services).",
    )
    data_dir: Path = Path("data")
    policies_dir: Path = Path("policies")
    keys_dir: Path = Path("keys")
    demo: bool = Field(
        default=False,
        description="Enables the built-in demo sign-in provider. Never in production.",
    )
    master_key: SecretStr | None = Field(
        default=None, description="32-byte master key (hex or base64) sealing keys/vault/kek.ring."
    )
    master_key_file: Path | None = Field(default=None, description="File holding the master key.")
    data_key_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    data_key_cache_ttl: int = Field(default=300, ge=0, le=3600, description="Seconds.")
    signing_alg: Literal["ES256", "RS256"] = "ES256"
    code_ttl: int = Field(default=60, ge=10, le=600, description="Authorization code life (s).")
    access_token_ttl: int = Field(default=3600, ge=60, le=86400)
    refresh_token_ttl: int = Field(default=30 * 86400, ge=3600, le=365 * 86400)
    # Off by default: RFC 9700 §4.14.2's strict reading (every second use is a replay). With
    # replicated Redis (Sentinel, Cluster) a reply lost in a failover would otherwise cost the
    # person their sign-in; docs/threat-model.md, "Refresh repeats", weighs the two.
    refresh_repeat_seconds: int = Field(
        default=0, ge=0, le=300,
        description="A refresh asked again with the same token this soon (a lost reply) gets the same "
                    "answer instead of ending the token family; 0: every second use is a replay.")
    id_token_ttl: int = Field(default=3600, ge=60, le=86400)
    session_ttl: int = Field(default=8 * 3600, ge=300, le=30 * 86400)
    authorize_request_ttl: int = Field(default=600, ge=60, le=3600)
    # DPoP (RFC 9449, gateway/oidc/dpop.py; docs/shops.md, "DPoP"). A shop opts in to
    # requiring proofs in its file (dpop_bound_access_tokens); these apply to every shop.
    dpop_required_for_public_clients: bool = Field(
        default=False,
        description="Public clients (token_endpoint_auth_method none) must send DPoP proofs.")
    dpop_proof_max_age: int = Field(
        default=60, ge=5, le=300,
        description="Seconds a DPoP proof's iat may differ from the gateway's clock.")
    dpop_nonce_required: bool = Field(
        default=False,
        description="DPoP proofs must carry a server nonce (DPoP-Nonce, RFC 9449 §8, §9).")
    dpop_nonce_lifetime: int = Field(
        default=300, ge=30, le=3600,
        description="Seconds per DPoP nonce window; a nonce is accepted for one to two windows.")
    # Pushed authorization requests (RFC 9126, gateway/oidc/par.py; docs/shops.md, "PAR and
    # FAPI 2.0"). A shop can require PAR in its file; FAPI 2.0 shops always do.
    require_pushed_authorization_requests: bool = Field(
        default=False,
        description="Every shop must push its authorization requests to /par (RFC 9126 §5).")
    par_request_uri_ttl: int = Field(
        default=60, ge=60, le=90,
        description="Seconds a request_uri from /par may be used (once) at /authorize.")
    relay_email_domain: str = Field(
        default="", description="Domain of relay e-mail aliases; empty: relay.<issuer host>."
    )
    audit_origin: str = Field(
        default="", description="Checkpoint origin line and key name; empty: <issuer host>/audit."
    )
    staff: list[StaffMember] = Field(
        default_factory=list, description="Compliance staff: id, role, token_sha256 ([[staff]] in TOML)."
    )
    audit_checkpoint_events: int = Field(default=1000, ge=1, le=1_000_000)
    audit_checkpoint_seconds: float = Field(default=60.0, ge=1.0, le=86400.0)
    audit_shards: int = Field(
        default=1, ge=1, le=64,
        description="Audit logs, each in its own Redis slot; a person's events stay in one. "
                    "Fixed for a log's lifetime (docs/audit.md, \"Shards\").")
    # The audit log's cold tier (docs/audit.md, "Tiers"): with a directory set, Redis keeps the
    # newest audit_hot_entries entries of each shard and older signed ones move to files.
    audit_cold_dir: Path | None = Field(
        default=None,
        description="Directory of the audit log's cold tier (C2SP tlog-tiles layout), shared by "
                    "every gateway host; unset: the whole log stays in Redis.")
    audit_hot_entries: int = Field(
        default=262_144, ge=0, le=1 << 40,
        description="Newest entries per audit shard kept in Redis when audit_cold_dir is set; "
                    "Redis memory for the log is about 600-800 bytes times this, per shard.")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_token_sha256: str = Field(
        default="", pattern=r"^([0-9a-f]{64})?$",
        description="SHA-256 (hex) of the bearer token /metrics requires; empty: loopback only.")
    providers: list[ProviderSettings] = Field(
        default_factory=list, description="Upstream sign-in providers (docs/providers.md)."
    )
    upstream_timeout: float = Field(default=10.0, ge=1.0, le=60.0,
                                    description="Seconds for each call to a provider.")
    upstream_retries: int = Field(
        default=1, ge=0, le=5,
        description="Extra attempts after a failed connection, or after a timeout or 5xx of a read.")
    upstream_metadata_ttl: int = Field(default=3600, ge=60, le=86400,
                                       description="Seconds OIDC discovery and JWKS are cached.")
    # Upstream isolation (docs/providers.md, "Slow providers"): one slow provider must not
    # hold anyone else up. upstream_timeout above bounds each socket operation; the
    # deadline bounds a whole call (connect, send, retries, every byte of the body).
    upstream_deadline: float = Field(
        default=5.0, ge=0.5, le=60.0,
        description="Seconds one call to a provider may take in total, retries included.")
    upstream_concurrency: int = Field(
        default=32, ge=1, le=1000,
        description="Calls in progress per provider and process; one more fails at once.")
    upstream_breaker_failures: int = Field(
        default=5, ge=1, le=100,
        description="Consecutive failed calls (timeout, connection error, 5xx) that open a "
                    "provider's circuit.")
    upstream_breaker_cooldown: float = Field(
        default=30.0, ge=1.0, le=3600.0,
        description="Seconds an open circuit refuses calls before one trial call.")
    upstream_failure_ttl: float = Field(
        default=15.0, ge=1.0, le=300.0,
        description="Seconds a failed OIDC discovery or JWKS fetch is remembered (not retried).")

    # Rate limits (docs/threat-model.md, "Rate limits"), held in Redis across workers and
    # hosts. Per IP means the client address uvicorn reports (behind a proxy: its
    # --forwarded-allow-ips); IPv6 addresses count per /64. Defaults leave room for a
    # carrier-grade NAT, where thousands of people share one address.
    rate_limits: bool = Field(default=True, description="Off only for benchmarks and load tests.")
    rate_limit_authorize_per_ip: RateLimit = Field(
        default=RateLimit(count=300, per_seconds=60, burst=150),
        description="Authorization requests and upstream sign-in starts (each parks state).")
    rate_limit_client_failures_per_ip: RateLimit = Field(
        default=RateLimit(count=60, per_seconds=60, burst=30),
        description="Failed client authentications (401 invalid_client) from one address.")
    rate_limit_client_failures_per_client: RateLimit = Field(
        default=RateLimit(count=10, per_seconds=60, burst=10),
        description="Failed client authentications for one client_id from one address.")
    rate_limit_staff_failures_per_ip: RateLimit = Field(
        default=RateLimit(count=10, per_seconds=60, burst=5),
        description="Failed staff sign-ins and staff API tokens from one address.")
    rate_limit_account_writes_per_person: RateLimit = Field(
        default=RateLimit(count=30, per_seconds=60, burst=10),
        description="Consent-centre changes (withdraw, erase, link) by one person.")
    rate_limit_par_per_shop: RateLimit = Field(
        default=RateLimit(count=3000, per_seconds=60, burst=600),
        description="Pushed authorization requests of one authenticated shop (each is kept 60-90 s).")
    rate_limit_miniprogram_per_ip: RateLimit = Field(
        default=RateLimit(count=1200, per_seconds=60, burst=300),
        description="Mini-program logins from one address (a shop's back end).")
    rate_limit_miniprogram_per_shop: RateLimit = Field(
        default=RateLimit(count=3000, per_seconds=60, burst=600),
        description="Mini-program logins of one authenticated shop (WeChat's quota).")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE, "")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @field_validator("issuer")
    @classmethod
    def _issuer_is_a_bare_https_url(cls, value: str) -> str:
        # OIDC Discovery §3: https, no query or fragment; a trailing slash would make
        # "iss" comparisons fail in strict relying parties, so it is removed.
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an absolute https URL")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("must use https (plain http is accepted only on loopback)")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str) -> str:
        if value and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL, or empty")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, sentinels: list[str]) -> list[str]:
        for sentinel in sentinels:
            host, _, port = sentinel.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{sentinel!r} is not host:port")
        return sentinels

    @field_validator("providers")
    @classmethod
    def _provider_ids_unique(cls, providers: list[ProviderSettings]) -> list[ProviderSettings]:
        seen: set[str] = set()
        for provider in providers:
            if provider.id in seen or provider.id == "demo":
                raise ValueError(f"provider id {provider.id!r} is used twice or reserved")
            seen.add(provider.id)
        return providers

    @model_validator(mode="after")
    def _cluster_needs_a_node(self) -> Settings:
        if self.redis_cluster and (self.redis_sentinels or urlsplit(self.redis_url).scheme not in (
                "redis", "rediss")):
            raise ValueError("redis_cluster needs redis_url naming one cluster node (redis:// or "
                             "rediss://) and no redis_sentinels")
        return self

    @model_validator(mode="after")
    def _tokens_outlive_codes(self) -> Settings:
        if self.refresh_token_ttl <= self.access_token_ttl:
            raise ValueError("refresh_token_ttl must be longer than access_token_ttl")
        return self

    @property
    def audit_log_origin(self) -> str:
        return self.audit_origin or f"{urlsplit(self.issuer).netloc}/audit"

    @property
    def uses_embedded_redis(self) -> bool:
        return not self.redis_url and not self.redis_sentinels

    @property
    def allowed_http_issuer(self) -> bool:
        return urlsplit(self.issuer).scheme == "http"


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "settings"
    setting = f"{ENV_PREFIX}{location.upper()}" if first["loc"] else "settings"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"invalid setting {setting}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, or raise :class:`ConfigError` with one line naming the bad setting."""
    config_file = os.environ.get(CONFIG_FILE_VARIABLE, "")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"invalid setting {CONFIG_FILE_VARIABLE}: no such file {config_file}")
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
    except ValueError as error:  # malformed TOML surfaces as a ValueError subclass
        raise ConfigError(f"invalid setting {CONFIG_FILE_VARIABLE}: {error}") from None
