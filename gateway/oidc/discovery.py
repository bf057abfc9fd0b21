"""Provider metadata: OpenID Connect Discovery 1.0 §3 and RFC 8414 §2."""

from __future__ import annotations

from typing import Any

from gateway.oidc.clients import SUPPORTED_SCOPES
from gateway.oidc.dpop import DPOP_ALGORITHMS
from gateway.oidc.server import ASSERTION_ALGORITHMS, TOKEN_AUTH_METHODS
from gateway.policy import Catalogue
from gateway.vault.jwe import SUPPORTED_JWE_ALGS, SUPPORTED_JWE_ENCS

SIGNING_ALGORITHMS = ["ES256", "RS256"]


def provider_metadata(issuer: str, catalogue: Catalogue, *,
                      require_par: bool = False) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "end_session_endpoint": f"{issuer}/logout",
        "pushed_authorization_request_endpoint": f"{issuer}/par",  # RFC 9126 §5
        "require_pushed_authorization_requests": require_par,
        "scopes_supported": list(SUPPORTED_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": SIGNING_ALGORITHMS,
        "id_token_encryption_alg_values_supported": list(SUPPORTED_JWE_ALGS),
        "id_token_encryption_enc_values_supported": list(SUPPORTED_JWE_ENCS),
        "userinfo_signing_alg_values_supported": SIGNING_ALGORITHMS,
        "userinfo_encryption_alg_values_supported": list(SUPPORTED_JWE_ALGS),
        "userinfo_encryption_enc_values_supported": list(SUPPORTED_JWE_ENCS),
        "token_endpoint_auth_methods_supported": TOKEN_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": TOKEN_AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": [
            m for m in TOKEN_AUTH_METHODS if m != "none"
        ],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),  # RFC 9449 §5.1
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "amr",
            *sorted({spec.claim for spec in catalogue.fields.values()}),
        ],
        "claims_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "ui_locales_supported": ["zh-CN", "en"],
    }
