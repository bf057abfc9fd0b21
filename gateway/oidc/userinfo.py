"""The UserInfo endpoint (OIDC Core §5.3) with bearer tokens (RFC 6750) and DPoP-bound
tokens (RFC 9449 §7: ``Authorization: DPoP <token>`` and a proof naming it in ``ath``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error

from gateway.oidc.clients import Shop
from gateway.oidc.context import ProviderContext
from gateway.oidc.dpop import DPOP_ALGORITHMS, DPoPVerifier, UseDPoPNonceError
from gateway.oidc.server import JSON_HEADERS, Response
from gateway.oidc.tokens import TokenRecord
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


def _dpop_error(error: str, description: str, nonce: str | None = None) -> Response:
    """RFC 9449 §7.1: a ``DPoP`` challenge with the error and the algorithms accepted; with
    ``use_dpop_nonce`` also the nonce to use (§9)."""
    challenge = (f'DPoP error="{error}", error_description="{description}", '
                 f'algs="{" ".join(DPOP_ALGORITHMS)}"')
    headers = [*JSON_HEADERS, ("WWW-Authenticate", challenge)]
    if nonce:
        headers.append(("DPoP-Nonce", nonce))
    return 401, {"error": error, "error_description": description}, headers


def bearer_token(authorization: str | None, form_token: str | None) -> tuple[str | None, bool]:
    """The access token from the header or (POST) the form; second value: was it malformed."""
    token, _, malformed = access_token(authorization, form_token)
    return token, malformed


def access_token(authorization: str | None,
                 form_token: str | None) -> tuple[str | None, str, bool]:
    """The access token, its scheme (``bearer`` or ``dpop``; a form token is a bearer token)
    and whether the request was malformed."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme not in ("bearer", "dpop") or not value.strip() or form_token:
            return None, scheme, True
        return value.strip(), scheme, False
    return form_token, "bearer", False


INVALID_TOKEN = "The access token is invalid or expired."  # noqa: S105 - a message


def _token_record(ctx: ProviderContext, token: str, scheme: str, method: str,
                  dpop: Sequence[str]) -> TokenRecord | Response:
    """The live record of ``token`` presented under ``scheme``, or the refusal."""
    proof_jkt: str | None = None
    if scheme == "dpop":
        # The proof first: cheap checks and its single use, before the token is looked up.
        try:
            proof_jkt = DPoPVerifier.for_context(ctx).verify(
                dpop, method=method, url=ctx.endpoint("/userinfo"), access_token=token).jkt
        except UseDPoPNonceError as error:
            return _dpop_error(error.error, "Resend with the nonce in DPoP-Nonce.", error.nonce)
        except OAuth2Error as error:
            return _dpop_error(error.error, error.get_error_description() or "")
    record = ctx.tokens.find_access_token(token)
    if record is None:
        if scheme == "dpop":
            return _dpop_error("invalid_token", INVALID_TOKEN)
        return _bearer_error(401, "invalid_token", INVALID_TOKEN)
    if record.jkt is not None and scheme != "dpop":
        # RFC 9449 §7.2: a DPoP-bound token presented as a bearer token is refused.
        return _dpop_error("invalid_token", "This access token is DPoP-bound: use the DPoP scheme.")
    if scheme == "dpop" and record.jkt is None:
        return _dpop_error("invalid_token", "This access token is not DPoP-bound: use the Bearer scheme.")
    if scheme == "dpop" and record.jkt != proof_jkt:
        return _dpop_error("invalid_token", "The DPoP proof is signed by another key than the token's.")
    return record


def userinfo_response(ctx: ProviderContext, authorization: str | None,
                      form_token: str | None, method: str = "GET",
                      dpop: Sequence[str] = ()) -> Response:
    token, scheme, malformed = access_token(authorization, form_token)
    if malformed:
        return _bearer_error(400, "invalid_request", "Malformed Authorization header.")
    if not token:
        return _bearer_error(401, None)
    record = _token_record(ctx, token, scheme, method, dpop)
    if not isinstance(record, TokenRecord):
        return record
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
