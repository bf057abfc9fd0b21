"""Pushed authorization requests (RFC 9126).

``POST /par``: the shop authenticates exactly as at ``/token`` (the same
:meth:`ProviderServer.authenticate_client`, methods and checks), its authorization request
parameters are validated as ``/authorize`` validates them
(:meth:`AuthorizationFlow.validate`), and kept in Redis for ``par_request_uri_ttl`` seconds
(60 to 90) under a fresh ``request_uri`` (``urn:ietf:params:oauth:request_uri:<256 random
bits>``). The key is named by the shop and the URI's digest, so only that shop finds it, and
``/authorize`` takes it with one ``GETDEL``: one round trip, and of two requests presenting
the same URI exactly one gets the parameters (RFC 9126 §4: single use).

``/authorize?client_id=…&request_uri=…`` then runs on the pushed parameters alone; any other
front-channel parameter is ignored (RFC 9101 §6.3, which RFC 9126 §4 builds on). Other
``request_uri`` values (request objects by reference) stay refused with
``request_uri_not_supported``. Shops whose file says ``require_pushed_authorization_requests``
(or ``profile: fapi2``), or every shop when the setting of that name is on, get
``invalid_request`` for an authorization request that was not pushed (RFC 9126 §5).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Error

from gateway.oidc import fapi
from gateway.oidc.dpop import DPoPVerifier, proof_headers
from gateway.oidc.server import JSON_HEADERS, TOKEN_AUTH_METHODS, ProviderRequest, Response
from gateway.oidc.tokens import digest, new_secret
from gateway.store.limits import pushed_requests, spend

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.oidc.clients import Shop
    from gateway.oidc.context import ProviderContext
    from gateway.oidc.flow import AuthorizationFlow

log = logging.getLogger(__name__)

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
MAX_REQUEST_URI_CHARS = 128
# Client authentication travels with the pushed request but is not part of it.
CLIENT_AUTH_FIELDS = frozenset({"client_secret", "client_assertion", "client_assertion_type"})
PAR_ENDPOINT = "pushed_authorization"  # the endpoint name client authentication is told


class InvalidRequestUriError(OAuth2Error):  # type: ignore[misc]
    """RFC 9101 §7 / OIDC Core §3.1.2.6: the request_uri is unknown, used, expired or not
    this client's."""

    error = "invalid_request_uri"


def is_pushed_request_uri(value: str) -> bool:
    """Whether ``value`` has the form of the gateway's own request URIs (else it names a
    request object by reference, which is not supported)."""
    return value.startswith(REQUEST_URI_PREFIX)


def required(shop: Shop, settings: Settings) -> bool:
    """Whether ``shop`` may send authorization requests only through ``/par``."""
    return (settings.require_pushed_authorization_requests
            or shop.config.require_pushed_authorization_requests
            or fapi.requires_par(shop.config))


class PushedRequests:
    """Pushed authorization requests in Redis: written once, taken once."""

    def __init__(self, ctx: ProviderContext) -> None:
        self._redis = ctx.store.redis
        self._keys = ctx.store.keys
        self.ttl = ctx.settings.par_request_uri_ttl

    def _key(self, client_id: str, request_uri: str) -> str:
        return self._keys.pushed_request(client_id, digest(request_uri))

    def push(self, client_id: str, params: dict[str, str]) -> str:
        """Keep ``params`` for ``client_id``; returns the new request_uri."""
        request_uri = REQUEST_URI_PREFIX + new_secret()
        self._redis.set(self._key(client_id, request_uri), json.dumps(params), ex=self.ttl)
        return request_uri

    def take(self, client_id: str, request_uri: str) -> dict[str, str] | None:
        """The parameters pushed by ``client_id`` under ``request_uri``, once; None if unknown,
        expired, used already or pushed by another client."""
        if len(request_uri) > MAX_REQUEST_URI_CHARS or not is_pushed_request_uri(request_uri):
            return None
        raw = self._redis.getdel(self._key(client_id, request_uri))
        if raw is None:
            return None
        params: dict[str, str] = json.loads(raw)
        return params


def _error(error: OAuth2Error) -> Response:
    """RFC 9126 §2.3: errors as RFC 6749 §5.2 JSON, never a redirect (the grant's errors
    carry the shop's redirect URI, for the front channel)."""
    body: dict[str, Any] = {"error": error.error}
    description = error.get_error_description()
    if description:
        body["error_description"] = description
    own = {name.lower() for name, _ in JSON_HEADERS}
    headers = [*JSON_HEADERS, *[(k, v) for k, v in error.get_headers() if k.lower() not in own]]
    status = error.status_code if error.status_code in (400, 401) else 400
    return status, body, headers


def bind_to_proof_key(flow: AuthorizationFlow, request: ProviderRequest, params: dict[str, str]) -> None:
    """RFC 9449 §10.1: a DPoP proof sent with the push binds the code to its key, as
    ``dpop_jkt`` would; a pushed ``dpop_jkt`` must then name that same key."""
    values = proof_headers(request.headers)
    if not values:
        return
    jkt = DPoPVerifier.for_context(flow.ctx).verify(values, method="POST", url=flow.ctx.endpoint("/par")).jkt
    if not hmac.compare_digest(params.get("dpop_jkt", jkt), jkt):
        raise InvalidRequestError("'dpop_jkt' must be the thumbprint of the DPoP proof's key.")
    params["dpop_jkt"] = jkt


def push_response(flow: AuthorizationFlow, request: ProviderRequest) -> Response:
    """``POST /par`` (RFC 9126 §2): 201 with ``request_uri`` and ``expires_in``, or an error."""
    try:
        shop: Shop = flow.server.authenticate_client(request, TOKEN_AUTH_METHODS, PAR_ENDPOINT)
        # Repeated fields are kept apart so that validation refuses them (RFC 6749 §3.1).
        fields = [(k, v) for k, values in request.payload.datalist.items()
                  if k not in CLIENT_AUTH_FIELDS for v in values if k in request.form]
        if any(k == "request_uri" for k, _ in fields):  # RFC 9126 §2.1
            raise InvalidRequestError("'request_uri' must not be pushed.")
        fields = [(k, v) for k, v in fields if k != "client_id"] + [("client_id", shop.client_id)]
        params = flow.validate(fields)
        bind_to_proof_key(flow, request, params)
    except OAuth2Error as error:
        log.info("pushed authorization request refused", extra={"error": error.error})
        return _error(error)
    # Per shop only once it has authenticated: nobody can spend a shop's budget in its name.
    spend(flow.ctx.settings, flow.ctx.store.limits, pushed_requests(flow.ctx.settings), shop.client_id)
    pushed = PushedRequests(flow.ctx)
    request_uri = pushed.push(shop.client_id, params)
    return 201, {"request_uri": request_uri, "expires_in": pushed.ttl}, list(JSON_HEADERS)
