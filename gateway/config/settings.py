"""Gateway settings.

Sources, strongest first: explicit arguments, ``GATEWAY_*`` environment variables, the TOML
file named by ``GATEWAY_CONFIG``, then the defaults below. A bad value stops start-up with
one line naming the setting (:func:`load_settings`), never a traceback.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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
    redis_key_prefix: str = Field(default="cg:", min_length=1, max_length=64)
    data_dir: Path = Path("data")
    policies_dir: Path = Path("policies")
    keys_dir: Path = Path("keys")
    demo: bool = Field(
        default=False,
        description="Enables the built-in demo sign-in provider. Never in production.",
    )
    signing_alg: Literal["ES256", "RS256"] = "ES256"
    code_ttl: int = Field(default=60, ge=10, le=600, description="Authorization code life (s).")
    access_token_ttl: int = Field(default=3600, ge=60, le=86400)
    refresh_token_ttl: int = Field(default=30 * 86400, ge=3600, le=365 * 86400)
    id_token_ttl: int = Field(default=3600, ge=60, le=86400)
    session_ttl: int = Field(default=8 * 3600, ge=300, le=30 * 86400)
    authorize_request_ttl: int = Field(default=600, ge=60, le=3600)
    relay_email_domain: str = Field(
        default="", description="Domain of relay e-mail aliases; empty: relay.<issuer host>."
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

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

    @model_validator(mode="after")
    def _tokens_outlive_codes(self) -> Settings:
        if self.refresh_token_ttl <= self.access_token_ttl:
            raise ValueError("refresh_token_ttl must be longer than access_token_ttl")
        return self

    @property
    def uses_embedded_redis(self) -> bool:
        return not self.redis_url

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
