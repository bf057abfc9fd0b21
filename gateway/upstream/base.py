"""The one small interface every upstream connector implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

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

    def again(self) -> UpstreamError:
        """A fresh error with the same reason, for each of several requests that shared one
        failed call (``request_id`` is per request, so one instance is never handed out twice)."""
        return type(self)(self.reason, retryable=self.retryable)


class ProviderUnavailableError(UpstreamError):
    """The provider is not called at all right now: its circuit is open after repeated
    failures, as many calls as allowed are already waiting on it, or its discovery document
    failed moments ago. The person is told the provider is unavailable for the moment; the
    shop hears ``temporarily_unavailable``."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason, retryable=True)


@dataclass(frozen=True, slots=True)
class UpstreamIdentity:
    """Who signed in upstream: the provider's own subject and the catalogue fields it gave.

    ``subject`` is the strongest raw identifier the provider gave (a WeChat unionid before
    an openid, an OIDC ``iss`` + ``sub`` pair). It never leaves the gateway and is stored
    only as a keyed digest, under ``namespace`` (the provider id unless the identifier is
    shared by several apps, like a unionid). ``also_known_as`` lists weaker identifiers
    seen in the same sign-in as ``(namespace, subject)`` pairs, so that a later sign-in that
    yields only one of them finds the same person.
    """

    provider_id: str
    subject: str
    profile: dict[str, Any] = field(default_factory=dict)
    amr: tuple[str, ...] = ()
    namespace: str = ""
    also_known_as: tuple[tuple[str, str], ...] = ()
    subject_kind: str = "sub"  # which identifier ``subject`` is (openid, unionid, …), for logs
    has_profile: bool = True  # False: this sign-in gives no profile; keep the stored one

    @property
    def key_namespace(self) -> str:
        return self.namespace or self.provider_id


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Connector(Protocol):
    """A provider the person can sign in with through the browser."""

    @property
    def provider_id(self) -> str: ...

    @property
    def display_name(self) -> str: ...

    @property
    def logo(self) -> str:
        """The logo's file name under ``/static/logos/``, without ``.svg``."""
        ...

    def name_in(self, language: str) -> str:
        """The name shown on the sign-in page in ``language`` (``zh-CN`` or ``en``)."""
        ...

    def offered_to(self, user_agent: str) -> bool:
        """Whether the sign-in page lists this provider for this browser (WeChat's
        official-account login works only inside WeChat, its QR login only outside)."""
        ...

    def available(self) -> bool:
        """False while the provider is known to be failing (its circuit is open, or its
        discovery failed moments ago): the sign-in page shows it as unavailable."""
        ...

    # The calls below may talk to the provider: they are coroutines on async HTTP, each
    # call bounded by a total deadline (gateway/upstream/http.py), so a slow provider
    # holds no worker thread.

    async def authorization_origin(self) -> str:
        """The origin the person's browser is sent to (``https://host[:port]``): a page whose
        form leads there lists it in its CSP ``form-action`` (browsers check redirects too)."""
        ...

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str,
                                redirect_uri: str) -> str:
        """Where to send the browser to sign in upstream."""
        ...

    async def callback_code(self, params: Mapping[str, str]) -> str:
        """The authorization code in the provider's callback query, after the provider's
        own checks (an ``error``, RFC 9207 ``iss``, the code parameter's name). Raises
        UpstreamError."""
        ...

    async def fetch_identity(self, *, code: str, code_verifier: str, redirect_uri: str,
                             nonce: str) -> UpstreamIdentity:
        """Exchange the upstream code and return who signed in. Raises UpstreamError."""
        ...


def callback_error(params: Mapping[str, str]) -> UpstreamError | None:
    """An OAuth error in a callback (RFC 6749 §4.1.2.1), as the error to raise, or None."""
    error = params.get("error")
    if not error:
        return None
    # Only the error code is kept: descriptions are provider text and may echo input.
    code = error if error.replace("_", "").isalnum() and len(error) <= 64 else "invalid"
    retryable = code in ("temporarily_unavailable", "server_error")
    return UpstreamError(f"provider returned error {code}", retryable=retryable)


def code_parameter(params: Mapping[str, str], name: str = "code") -> str:
    """The code in a callback, or an error if the provider sent none (the person declined)."""
    error = callback_error(params)
    if error is not None:
        raise error
    code = params.get(name, "")
    if not code or len(code) > 2048:
        raise UpstreamError("code missing (the person declined or the provider failed)")
    return code
