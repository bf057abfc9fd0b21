"""Shops (OAuth clients), declared one YAML file per shop under ``policies/shops/``.

A shop's secret is never in its file: ``gateway shops secret CLIENT_ID`` draws a random
256-bit secret, prints it once and keeps only its SHA-256 digest in
``keys/shops/<client_id>.sha256``. High-entropy secrets need no slow password hash; the
digest is compared in constant time (DESIGN.md, "Client secrets").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx2 as httpx
import yaml
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.config.settings import check_https_url, is_loopback_host
from gateway.errors import ConfigError
from gateway.oidc import fapi
from gateway.oidc.sectors import verified_sector
from gateway.policy import ShopPolicy
from gateway.vault.errors import UnsupportedAlgorithmError
from gateway.vault.files import write_private_file
from gateway.vault.jwe import check_encryption_metadata
from gateway.vault.signing import SigningAlg

AuthMethod = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
SUPPORTED_SCOPES = ("openid", "profile", "email", "phone", "address")
CLIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$"
JWKS_URI_CACHE_SECONDS = 300
SECRET_RECHECK_SECONDS = 1.0


def _check_redirect_uri(uri: str) -> str:
    # RFC 9700 §2.1: redirect URIs are compared exactly, so they must be complete and
    # unambiguous.
    return check_https_url(uri, "redirect URI")


class ShopConfig(BaseModel):
    """The protocol part of a shop's file (the consent part is added by the policy issue)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    name_zh: str | None = Field(default=None, max_length=100)
    contact: str | None = Field(default=None, max_length=200)
    redirect_uris: list[str] = Field(min_length=1)
    post_logout_redirect_uris: list[str] = Field(default_factory=list)
    token_endpoint_auth_method: AuthMethod = "client_secret_basic"
    grant_types: list[Literal["authorization_code", "refresh_token"]] = Field(
        default_factory=lambda: ["authorization_code", "refresh_token"]  # type: ignore[arg-type]
    )
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile"])
    id_token_signed_response_alg: Literal["ES256", "RS256"] | None = None
    # Encryption to the shop (OIDC Registration §2): nested JWT, signed then encrypted.
    id_token_encrypted_response_alg: str | None = None
    id_token_encrypted_response_enc: str | None = None
    userinfo_signed_response_alg: Literal["ES256", "RS256"] | None = None
    userinfo_encrypted_response_alg: str | None = None
    userinfo_encrypted_response_enc: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    sector_identifier_uri: str | None = None
    # private_key_jwt: also accept the token endpoint URL (one string) as the assertion's
    # audience, and 10-minute assertions, for client libraries that predate the 2025
    # audience advisory. Off by default (docs/shops.md).
    legacy_assertion_audience: bool = False
    # DPoP (RFC 9449): every token request must carry a proof, so every access token is
    # DPoP-bound (gateway/oidc/dpop.py, docs/shops.md "DPoP"). Without it, proofs are optional.
    dpop_bound_access_tokens: bool = False
    # PAR (RFC 9126 §6): authorization requests only through /par (gateway/oidc/par.py).
    require_pushed_authorization_requests: bool = False
    # "fapi2": the FAPI 2.0 Security Profile (gateway/oidc/fapi.py, docs/shops.md).
    profile: Literal["default", "fapi2"] = "default"
    policy: ShopPolicy = Field(default_factory=ShopPolicy)

    @field_validator("redirect_uris", "post_logout_redirect_uris")
    @classmethod
    def _uris_are_exact(cls, uris: list[str]) -> list[str]:
        return [_check_redirect_uri(uri) for uri in uris]

    @field_validator("scopes")
    @classmethod
    def _scopes_are_known(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - set(SUPPORTED_SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; supported: {list(SUPPORTED_SCOPES)}")
        if "openid" not in scopes:
            raise ValueError("scopes must include 'openid'")
        return scopes

    @field_validator("jwks")
    @classmethod
    def _jwks_parses(cls, jwks: dict[str, Any] | None) -> dict[str, Any] | None:
        if jwks is not None:
            try:
                KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as error:
                raise ValueError(f"jwks is not a valid JWK Set: {error}") from None
        return jwks

    @model_validator(mode="after")
    def _encryption_is_supported(self) -> ShopConfig:
        for what in ("id_token", "userinfo"):
            try:
                chosen = check_encryption_metadata(getattr(self, f"{what}_encrypted_response_alg"),
                                                   getattr(self, f"{what}_encrypted_response_enc"))
            except UnsupportedAlgorithmError as error:
                raise ValueError(f"{what}_encrypted_response_*: {error}") from None
            if chosen and not (self.jwks or self.jwks_uri):
                raise ValueError(f"{what}_encrypted_response_alg needs 'jwks' or 'jwks_uri'")
        return self

    def encryption(self, what: Literal["id_token", "userinfo"]) -> tuple[str, str] | None:
        """The (alg, enc) the shop registered for ``what``, or None."""
        return check_encryption_metadata(getattr(self, f"{what}_encrypted_response_alg"),
                                         getattr(self, f"{what}_encrypted_response_enc"))

    @model_validator(mode="after")
    def _consistent(self) -> ShopConfig:
        if self.token_endpoint_auth_method == "private_key_jwt" and not (self.jwks or self.jwks_uri):
            raise ValueError("private_key_jwt needs 'jwks' or 'jwks_uri'")
        if self.jwks and self.jwks_uri:
            raise ValueError("give either 'jwks' or 'jwks_uri', not both")
        if self.jwks_uri and urlsplit(self.jwks_uri).scheme != "https":
            raise ValueError("jwks_uri must use https")
        # OIDC Core §8.1 asks for a sector_identifier_uri when redirect URIs span several
        # hosts because its sector is the host; here the sector is the shop itself
        # (gateway/oidc/sectors.py), which stays one sector whatever hosts it redirects to.
        return self

    @model_validator(mode="after")
    def _profile_is_met(self) -> ShopConfig:
        problems = fapi.config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def redirect_hosts(self) -> set[str]:
        return {urlsplit(uri).hostname or "" for uri in self.redirect_uris}

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


_LOOPBACK_NETLOC = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")


def _same_loopback_uri_but_port(registered: str, requested: str) -> bool:
    """True if ``requested`` is the registered plain-http loopback URI with another (or no)
    port: same scheme, host as written, path, query, all compared as strings."""
    if not re.fullmatch(r"[!-~]+", requested) or not requested.startswith("http://"):
        return False  # no spaces or controls (urlsplit would drop tabs), lowercase http only
    wanted, given = urlsplit(registered), urlsplit(requested)
    if wanted.scheme != "http" or not is_loopback_host(wanted.hostname):
        return False
    wanted_netloc = _LOOPBACK_NETLOC.fullmatch(wanted.netloc)
    given_netloc = _LOOPBACK_NETLOC.fullmatch(given.netloc)  # no userinfo either
    if wanted_netloc is None or given_netloc is None:
        return False
    port = given_netloc.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return False
    return (given_netloc.group("host") == wanted_netloc.group("host")
            and (given.path, given.query, given.fragment) == (wanted.path, wanted.query, wanted.fragment)
            and requested.count("?") == registered.count("?"))


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Shop:
    """A shop as authlib's ``ClientMixin`` sees it."""

    def __init__(self, config: ShopConfig, keys_dir: Path, default_alg: str,
                 sector: str | None = None) -> None:
        self.config = config
        self.client_id = config.client_id
        # The pairwise-subject sector, decided once at load (gateway/oidc/sectors.py).
        self.sector = sector or f"shop:{config.client_id}"
        self.id_token_signed_response_alg: SigningAlg = (
            config.id_token_signed_response_alg or fapi.id_token_alg(config, default_alg)  # type: ignore[assignment]
        )
        self._secret_file = keys_dir / "shops" / f"{config.client_id}.sha256"
        self._jwks_cache: tuple[float, dict[str, Any]] | None = None
        self._digest_cache: tuple[float, str | None] | None = None
        self.client_metadata: dict[str, Any] = {
            "post_logout_redirect_uris": list(config.post_logout_redirect_uris),
        }

    def __repr__(self) -> str:
        return f"Shop({self.client_id!r})"

    # authlib ClientMixin ------------------------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # OIDC Core §3.1.2.1: redirect_uri is required on every request

    def get_allowed_scope(self, scope: str | None) -> str:
        requested = (scope or "").split()
        return " ".join(s for s in dict.fromkeys(requested) if s in self.config.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.config.redirect_uris:
            return True
        # RFC 9700 §2.1 / §4.1.3, RFC 8252 §7.3: a native app's loopback redirect URI may
        # name any port (the app listens on whatever port the system gave it); nothing
        # else about the URI may differ. Native apps are the public shops.
        return self.config.is_public and any(
            _same_loopback_uri_but_port(registered, redirect_uri)
            for registered in self.config.redirect_uris)

    def _stored_digest(self) -> str | None:
        """The secret's digest, re-read at most once a second (a new secret from
        ``gateway shops secret`` takes effect within a second, without a file read per request)."""
        now = time.monotonic()
        if self._digest_cache is not None and now - self._digest_cache[0] < SECRET_RECHECK_SECONDS:
            return self._digest_cache[1]
        try:
            stored: str | None = self._secret_file.read_text().strip()
        except OSError:
            stored = None  # no secret issued yet: nothing can match
        self._digest_cache = (now, stored)
        return stored

    def check_client_secret(self, client_secret: str) -> bool:
        stored = self._stored_digest()
        return stored is not None and hmac.compare_digest(stored, secret_digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if method != self.config.token_endpoint_auth_method:
            return False
        # RFC 7662 §2.1: introspection callers must be authorised; a public client has
        # nothing to prove who it is with.
        return not (endpoint == "introspection" and self.config.is_public)

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.config.grant_types

    # keys for private_key_jwt ---------------------------------------------------------

    def jwks_document(self) -> dict[str, Any]:
        """The shop's JWK Set as JSON, from its file or fetched from ``jwks_uri`` (cached)."""
        if self.config.jwks is not None:
            return self.config.jwks
        now = time.monotonic()
        if self._jwks_cache and now - self._jwks_cache[0] < JWKS_URI_CACHE_SECONDS:
            return self._jwks_cache[1]
        jwks_uri = self.config.jwks_uri or ""
        response = httpx.get(jwks_uri, timeout=5.0, follow_redirects=False)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("the shop's jwks_uri did not return a JWK Set")
        self._jwks_cache = (now, document)
        return document

    def public_keys(self) -> KeySet:
        """The shop's keys for verifying its client assertions."""
        return KeySet.import_key_set(self.jwks_document())  # type: ignore[arg-type]


class ShopRegistry:
    """All shops, loaded once from ``policies/shops/*.yaml``."""

    def __init__(self, shops: dict[str, Shop]) -> None:
        self._shops = shops

    @classmethod
    def load(cls, policies_dir: Path, keys_dir: Path, default_alg: str) -> ShopRegistry:
        shops: dict[str, Shop] = {}
        for path in sorted((policies_dir / "shops").glob("*.y*ml")):
            config = load_shop_file(path)
            if config.client_id in shops:
                raise ConfigError(f"invalid shop file {path}: duplicate client_id {config.client_id}")
            try:  # fails closed: no shop without its sector (gateway/oidc/sectors.py)
                sector = verified_sector(config.client_id, config.sector_identifier_uri,
                                         config.redirect_uris, keys_dir)
            except ConfigError as error:
                raise ConfigError(f"invalid shop file {path}: {error}") from None
            shops[config.client_id] = Shop(config, keys_dir, default_alg, sector)
        return cls(shops)

    def get(self, client_id: str | None) -> Shop | None:
        if not isinstance(client_id, str):
            return None
        return self._shops.get(client_id)

    def __iter__(self) -> Any:
        return iter(self._shops.values())

    def __len__(self) -> int:
        return len(self._shops)


def load_shop_file(path: Path) -> ShopConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"invalid shop file {path}: {error}".replace("\n", " ")) from None
    try:
        return ShopConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid shop file {path}: {where}: {message}") from None


def issue_client_secret(keys_dir: Path, client_id: str) -> str:
    """Draw a new secret for ``client_id``, keep its digest, and return it (shown once)."""
    secret = secrets.token_urlsafe(32)
    write_private_file(keys_dir / "shops" / f"{client_id}.sha256", secret_digest(secret).encode())
    return secret
