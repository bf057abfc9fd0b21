"""The one small interface every upstream connector implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import GatewayError


class UpstreamError(GatewayError):
    """The provider refused, failed or answered something we cannot trust.

    ``reason`` is for logs and metrics (never containing tokens or profile values); the
    person sees a generic page and the shop ``access_denied`` or
    ``temporarily_unavailable`` (``retryable``).
    """

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.request_id: str | None = None  # the parked shop request, once known


@dataclass(frozen=True, slots=True)
class UpstreamIdentity:
    """Who signed in upstream: the provider's own subject and the catalogue fields it gave.

    ``subject`` is the raw provider identifier (openid, user id, sub). It never leaves the
    gateway and is stored only as a keyed digest.
    """

    provider_id: str
    subject: str
    profile: dict[str, Any] = field(default_factory=dict)
    amr: tuple[str, ...] = ()


class Connector(Protocol):
    """A provider the person can sign in with."""

    @property
    def provider_id(self) -> str: ...

    @property
    def display_name(self) -> str: ...

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str,
                          redirect_uri: str) -> str:
        """Where to send the browser to sign in upstream."""
        ...

    def fetch_identity(self, *, code: str, code_verifier: str, redirect_uri: str,
                       nonce: str) -> UpstreamIdentity:
        """Exchange the upstream code and return who signed in. Raises UpstreamError."""
        ...
