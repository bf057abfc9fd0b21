"""The gateway's side of an upstream sign-in: state, nonce and PKCE, then the code exchange.

The upstream ``state`` is single-use and bound to the browser that started the sign-in, so
a callback replayed, forged or opened in another browser is refused (RFC 9700 §4.7).
It is 64 hexadecimal characters: WeChat accepts only ``[a-zA-Z0-9]`` (at most 128 bytes)
and Alipay at most 100 characters.

A sign-in has one of two purposes: signing in for a parked shop request, or linking one
more provider to the person already signed in (docs/providers.md, "Linking").

:meth:`UpstreamLogins.start` and :meth:`UpstreamLogins.finish` are coroutines: the provider
calls are async HTTP, and the two Redis commands (store the state, consume it) each take a
short hop to the worker pool on the synchronous client, so neither a slow provider nor a
slow Redis blocks the event loop, and no worker thread waits on a provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from anyio import to_thread

from gateway.store import ConsumeOutcome, Store
from gateway.upstream.base import Connector, ProviderUnavailableError, UpstreamError, UpstreamIdentity

UPSTREAM_STATE_TTL = 600


@dataclass(frozen=True, slots=True)
class FinishedLogin:
    identity: UpstreamIdentity
    request_id: str
    link_person: str | None = None  # set when the sign-in links a provider to this person


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def s256_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class UpstreamLogins:
    def __init__(self, store: Store, connectors: dict[str, Connector], callback_base: str) -> None:
        self._store = store
        self.connectors = connectors
        self._callback_base = callback_base

    def callback_uri(self, provider_id: str) -> str:
        return f"{self._callback_base}/upstream/{provider_id}/callback"

    async def start(self, provider_id: str, request_id: str, browser: str) -> str:
        """Remember the sign-in and return the provider's authorization URL."""
        return await self._start(provider_id, browser, {"request_id": request_id})

    async def start_link(self, provider_id: str, person_id: str, browser: str) -> str:
        """Like :meth:`start`, for linking the provider's account to ``person_id``."""
        return await self._start(provider_id, browser, {"request_id": "", "link_person": person_id})

    async def _start(self, provider_id: str, browser: str, purpose: dict[str, str]) -> str:
        connector = self.connectors.get(provider_id)
        if connector is None:
            raise UpstreamError(f"unknown provider {provider_id!r}")
        if not connector.available():  # fail fast: the person would only come back to an error
            raise ProviderUnavailableError(f"{provider_id}: temporarily unavailable")
        state = secrets.token_hex(32)
        nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        # The URL first (it may need the provider's discovery document): a provider that
        # fails leaves no state behind.
        location = await connector.authorization_url(
            state=state, nonce=nonce, code_challenge=s256_challenge(verifier),
            redirect_uri=self.callback_uri(provider_id),
        )
        record = {"provider": provider_id, "browser": browser, "nonce": nonce,
                  "verifier": verifier, **purpose}
        key = self._store.keys.upstream_state(_digest(state))
        await to_thread.run_sync(lambda: self._store.redis.set(key, json.dumps(record),
                                                               ex=UPSTREAM_STATE_TTL))
        return location

    async def finish(self, provider_id: str, params: Mapping[str, str], browser: str) -> FinishedLogin:
        """Check the callback (its whole query) and exchange the code. Raises UpstreamError."""
        state = params.get("state", "")
        if not state or len(state) > 128:
            raise UpstreamError("state missing")
        result = await to_thread.run_sync(self._store.consume_once,
                                          self._store.keys.upstream_state(_digest(state)),
                                          UPSTREAM_STATE_TTL)
        if result.outcome is not ConsumeOutcome.CONSUMED or result.value is None:
            raise UpstreamError("state unknown, expired or replayed")
        record = json.loads(result.value)
        if record["provider"] != provider_id or not hmac.compare_digest(record["browser"], browser):
            raise UpstreamError("state issued to another provider or browser")
        connector = self.connectors[provider_id]
        try:
            code = await connector.callback_code(params)
            identity = await connector.fetch_identity(
                code=code, code_verifier=record["verifier"],
                redirect_uri=self.callback_uri(provider_id), nonce=record["nonce"],
            )
        except UpstreamError as error:
            error.request_id = record["request_id"] or None  # the shop can now be told
            raise
        return FinishedLogin(identity, record["request_id"], record.get("link_person"))
