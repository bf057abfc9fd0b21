"""The FAPI 2.0 Security Profile (OpenID Foundation, final) for shops that ask for it.

A shop turns it on with ``profile: fapi2`` in its file (docs/shops.md, "PAR and FAPI 2.0").
Most of what FAPI 2.0 §5.3.2 asks of an authorization server the gateway does for every
shop already: PKCE with S256 only, ``response_type=code`` only, exact redirect URIs, the
``iss`` authorization response parameter (RFC 9207), single-use codes, client assertions
whose ``aud`` is the issuer as one string, no request objects by value. What the profile
adds is decided here:

- at load (:func:`config_problems`, called by ``ShopConfig``'s validator): a confidential
  client authenticating with ``private_key_jwt`` (``client_secret_*`` and public clients
  are refused with a message naming the rule), no ``legacy_assertion_audience``, no RS256
  signatures asked for (§5.4.1: PS256, ES256 or EdDSA);
- pushed authorization requests are required (:func:`requires_par`, read by
  ``gateway/oidc/par.py``);
- authorization codes live at most 60 seconds (:func:`code_lifetime`);
- client assertions are signed with PS256, ES256 or EdDSA (:func:`assertion_alg_allowed`).

Sender-constrained access tokens (§5.3.2.1: "shall only issue sender-constrained access
tokens", DPoP or mTLS; the gateway offers DPoP, RFC 9449, gateway/oidc/dpop.py): every
token request of a FAPI 2.0 shop must carry a DPoP proof, so all its access tokens are
DPoP-bound, whatever its ``dpop_bound_access_tokens`` says (:func:`sender_constrained`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.oidc.clients import ShopConfig

FAPI2 = "fapi2"
FAPI_CODE_SECONDS = 60  # FAPI 2.0 §5.3.2.1: authorization codes live at most 60 seconds
# FAPI 2.0 §5.4.1: PS256, ES256 or EdDSA (Ed25519, RFC 9864's name, and the older "EdDSA").
FAPI_ALGORITHMS = frozenset({"PS256", "ES256", "Ed25519", "EdDSA"})
FAPI_ID_TOKEN_ALG = "ES256"  # noqa: S105 - an algorithm name; of the gateway's signing algorithms, the one FAPI 2.0 allows


def is_fapi(config: ShopConfig) -> bool:
    return config.profile == FAPI2


def config_problems(config: ShopConfig) -> list[str]:
    """Why ``config`` cannot be a FAPI 2.0 shop; empty when it can (or is not one)."""
    if not is_fapi(config):
        return []
    problems: list[str] = []
    method = config.token_endpoint_auth_method
    if method != "private_key_jwt":
        problems.append(
            f"profile fapi2 needs token_endpoint_auth_method private_key_jwt, not {method} "
            "(FAPI 2.0 §5.3.2.1: confidential clients only, no shared secrets)")
    if config.legacy_assertion_audience:
        problems.append("profile fapi2 does not allow legacy_assertion_audience "
                        "(FAPI 2.0 §5.3.2.1: the assertion's aud is the issuer alone)")
    if "require_pushed_authorization_requests" in config.model_fields_set \
            and not config.require_pushed_authorization_requests:
        problems.append("profile fapi2 always requires pushed authorization requests "
                        "(FAPI 2.0 §5.3.2.2); remove require_pushed_authorization_requests: false")
    for what in ("id_token", "userinfo"):
        if getattr(config, f"{what}_signed_response_alg") == "RS256":
            problems.append(f"profile fapi2 does not allow {what}_signed_response_alg RS256 "
                            "(FAPI 2.0 §5.4.1: PS256, ES256 or EdDSA)")
    return problems


def requires_par(config: ShopConfig) -> bool:
    """FAPI 2.0 §5.3.2.2: authorization requests only by PAR (RFC 9126)."""
    return is_fapi(config)


def code_lifetime(config: ShopConfig, configured: int) -> int:
    """Seconds an authorization code for this shop lives."""
    return min(configured, FAPI_CODE_SECONDS) if is_fapi(config) else configured


def id_token_alg(config: ShopConfig, default_alg: str) -> str:
    """The shop's ID token algorithm when its file names none: the gateway's default, or
    ES256 for a FAPI 2.0 shop when the default is RS256."""
    if is_fapi(config) and default_alg not in FAPI_ALGORITHMS:
        return FAPI_ID_TOKEN_ALG
    return default_alg


def assertion_alg_allowed(config: ShopConfig, alg: object) -> bool:
    """Whether a client assertion signed with ``alg`` may authenticate this shop."""
    return not is_fapi(config) or alg in FAPI_ALGORITHMS


def sender_constrained(config: ShopConfig) -> bool:
    """Whether every access token of this shop must be DPoP-bound: FAPI 2.0 shops always
    (§5.3.2.1), others when their file says ``dpop_bound_access_tokens: true``."""
    return is_fapi(config) or config.dpop_bound_access_tokens
