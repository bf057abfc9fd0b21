"""The UserInfo endpoint (OIDC Core §5.3) with bearer tokens (RFC 6750)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from gateway.oidc.clients import Shop
from gateway.oidc.context import ProviderContext
from gateway.oidc.server import JSON_HEADERS, Response
from gateway.policy import release_claims
from gateway.vault.jwe import encrypt_claims, encrypt_nested_jwt


def _bearer_error(status: int, error: str | None, description: str = "") -> Response:
    # RFC 6750 §3: the challenge names the error; a request without any token gets a bare
    # challenge and no error code (§3.1).
    challenge = 'Bearer realm="consent-gateway"'
    if error:
        challenge += f', error="{error}"'
        if description:
            challenge += f', error_description="{description}"'
    body = {"error": error, "error_description": description} if error else {}
    return status, body, [*JSON_HEADERS, ("WWW-Authenticate", challenge)]


def bearer_token(authorization: str | None, form_token: str | None) -> tuple[str | None, bool]:
    """The access token from the header or (POST) the form; second value: was it malformed."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip() or form_token:
            return None, True
        return value.strip(), False
    return form_token, False


def userinfo_response(ctx: ProviderContext, authorization: str | None,
                      form_token: str | None) -> Response:
    token, malformed = bearer_token(authorization, form_token)
    if malformed:
        return _bearer_error(400, "invalid_request", "Malformed Authorization header.")
    if not token:
        return _bearer_error(401, None)
    record = ctx.tokens.find_access_token(token)
    if record is None:
        return _bearer_error(401, "invalid_token", "The access token is invalid or expired.")
    if "openid" not in record.scope.split():
        return _bearer_error(403, "insufficient_scope", "The token was not issued for openid.")
    shop = ctx.shops.get(record.client_id)
    if shop is None:  # the shop was removed from policies/ since the token was issued
        return _bearer_error(401, "invalid_token", "The access token is invalid or expired.")
    state = ctx.release_state(record.person_id, shop.client_id, record.gen)
    if state is None:  # the consent changed since the token was loaded
        return _bearer_error(401, "invalid_token", "The access token is invalid or expired.")
    profile, consent = state
    now = time.time()
    consented = consent.consented(now) if consent else set()
    claims, released = release_claims(
        shop_id=shop.client_id, person_id=record.person_id,
        subject=ctx.subject_for(shop, record.person_id), policy=shop.config.policy,
        catalogue=ctx.catalogue, requested=record.fields,
        consented=consented, profile=profile,
        shop_key=ctx.shop_key, relay_domain=ctx.relay_domain,
        today=datetime.fromtimestamp(now, UTC).date(),
    )
    policy = shop.config.policy
    # Recorded before anything leaves: if the audit log cannot take it, nothing is released.
    ctx.record("userinfo_read", shop=shop.client_id, person=record.person_id, fields=released,
               purposes={r.purpose for r in policy.fields if r.purpose and r.field in released
                         and (r.purpose, r.field) in consented},
               policy_version=policy.version)
    return _shaped_for(ctx, shop, claims)


def _shaped_for(ctx: ProviderContext, shop: Shop, claims: dict[str, Any]) -> Response:
    """Plain JSON, or a signed and/or encrypted JWT if the shop registered for it
    (OIDC Core §5.3.2: a signed or encrypted response carries ``iss`` and ``aud``)."""
    signing = shop.config.userinfo_signed_response_alg
    encryption = shop.config.encryption("userinfo")
    if signing is None and encryption is None:
        return 200, claims, list(JSON_HEADERS)
    claims = {**claims, "iss": ctx.issuer, "aud": shop.client_id}
    signed = ctx.signing_keys.sign(claims, signing) if signing else None
    if encryption is None:
        body = signed
    elif signed is None:
        body = encrypt_claims(claims, shop.jwks_document(), alg=encryption[0], enc=encryption[1])
    else:
        body = encrypt_nested_jwt(signed, shop.jwks_document(), alg=encryption[0], enc=encryption[1])
    return 200, body, [("Content-Type", "application/jwt"), ("Cache-Control", "no-store")]
