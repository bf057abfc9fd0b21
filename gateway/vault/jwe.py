"""Encrypting ID tokens and userinfo responses to a shop (JWE, RFC 7516, through joserfc).

A shop that registers ``id_token_encrypted_response_alg`` / ``_enc`` (or the userinfo
pair, OpenID Connect Dynamic Client Registration 1.0 §2) receives:

- a signed ID token or userinfo JWT, then encrypted: a *nested JWT* (OIDC Core §16.14
  "signed and then encrypted"), whose JWE header carries ``cty: "JWT"`` as RFC 7519 §5.2
  requires — :func:`encrypt_nested_jwt`;
- or, for userinfo without a signing algorithm, the claims JSON encrypted directly
  (OIDC Core §5.3.2) — :func:`encrypt_claims`.

The recipient key comes from the shop's JWK Set (OIDC Core §10.2): keys marked ``use:
sig`` are skipped, a key that names an ``alg`` must name the requested one, the key type
must fit the algorithm, and ``kid`` is matched when the caller has one. Of several
fitting keys the first listed wins (shops list their newest key first) and its ``kid``
goes into the header so the shop knows which private key to use.

joserfc refuses ``RSA-OAEP-256`` unless it is listed in ``algorithms=``: every call lists
exactly the one ``alg`` and ``enc`` in use, never the library's defaults.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final

from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, OKPKey, RSAKey

from gateway.vault.errors import EncryptionKeyError, UnsupportedAlgorithmError

#: ``id_token_encryption_alg_values_supported`` / ``userinfo_encryption_alg_values_supported``
SUPPORTED_JWE_ALGS: Final[tuple[str, ...]] = ("ECDH-ES+A256KW", "ECDH-ES", "RSA-OAEP-256", "RSA-OAEP")
#: ``id_token_encryption_enc_values_supported`` / ``userinfo_encryption_enc_values_supported``
SUPPORTED_JWE_ENCS: Final[tuple[str, ...]] = ("A256GCM", "A128CBC-HS256")
#: The ``enc`` a shop gets when it registers an ``alg`` alone (Dynamic Registration §2).
DEFAULT_JWE_ENC: Final = "A128CBC-HS256"

# NIST SP 800-57 part 1: RSA below 2048 bits protects nothing past 2030 (or today).
MIN_RSA_BITS: Final = 2048
_ECDH_CURVES: Final = frozenset({"P-256", "P-384", "P-521", "X25519", "X448"})
_KEY_OPS: Final = frozenset({"encrypt", "wrapKey", "deriveKey"})


def check_encryption_metadata(alg: str | None, enc: str | None) -> tuple[str, str] | None:
    """Validate a shop's ``*_encrypted_response_alg`` / ``_enc`` pair.

    Returns ``(alg, enc)`` to use, or None when the shop asked for no encryption.
    Dynamic Registration §2: ``enc`` without ``alg`` is an error; ``alg`` without ``enc``
    means ``A128CBC-HS256``.
    """
    if alg is None:
        if enc is not None:
            raise UnsupportedAlgorithmError(f"JWE enc {enc!r} given without an alg")
        return None
    enc = enc or DEFAULT_JWE_ENC
    if alg not in SUPPORTED_JWE_ALGS:
        raise UnsupportedAlgorithmError(f"unsupported JWE alg {alg!r}")
    if enc not in SUPPORTED_JWE_ENCS:
        raise UnsupportedAlgorithmError(f"unsupported JWE enc {enc!r}")
    return alg, enc


def _fits(key: Key, alg: str) -> bool:
    if alg.startswith("ECDH-ES"):
        return isinstance(key, ECKey | OKPKey) and key.curve_name in _ECDH_CURVES
    return isinstance(key, RSAKey) and key.public_key.key_size >= MIN_RSA_BITS


def _rsa_modulus_bits(jwk: Mapping[str, Any]) -> int:
    """Size of an RSA JWK's modulus, read before import (joserfc warns on weak keys)."""
    modulus = jwk.get("n")
    if not isinstance(modulus, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(raw, "big").bit_length()


def _public(jwk: Mapping[str, Any]) -> Key | None:
    if jwk.get("kty") == "RSA" and _rsa_modulus_bits(jwk) < MIN_RSA_BITS:
        return None
    try:
        key = JWKRegistry.import_key(dict(jwk))
        if key.is_private:  # a shop that publishes its private key still gets only public-key use
            key = JWKRegistry.import_key(key.as_dict(private=False))
    except (JoseError, ValueError, TypeError):
        return None
    return key


def select_encryption_key(jwks: Mapping[str, Any], alg: str, kid: str | None = None) -> Key:
    """The shop's key to encrypt to with ``alg`` (rules in the module docstring)."""
    if alg not in SUPPORTED_JWE_ALGS:
        raise UnsupportedAlgorithmError(f"unsupported JWE alg {alg!r}")
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise EncryptionKeyError("the shop's JWK Set has no \"keys\" array")
    for jwk in keys:
        if not isinstance(jwk, Mapping):
            continue
        if jwk.get("use", "enc") != "enc" or jwk.get("alg", alg) != alg:
            continue
        if kid is not None and jwk.get("kid") != kid:
            continue
        ops = jwk.get("key_ops")
        if isinstance(ops, list) and not _KEY_OPS.intersection(ops):
            continue
        key = _public(jwk)
        if key is not None and _fits(key, alg):
            return key
    wanted = f" with kid {kid!r}" if kid is not None else ""
    raise EncryptionKeyError(f"the shop's JWK Set has no encryption key for {alg}{wanted}")


def _encrypt(plaintext: bytes, jwks: Mapping[str, Any], alg: str, enc: str, kid: str | None,
             extra_header: Mapping[str, str]) -> str:
    if enc not in SUPPORTED_JWE_ENCS:
        raise UnsupportedAlgorithmError(f"unsupported JWE enc {enc!r}")
    key = select_encryption_key(jwks, alg, kid)
    header: dict[str, Any] = {"alg": alg, "enc": enc, **extra_header}
    if key.kid:
        header["kid"] = key.kid
    try:
        # Exactly the two algorithms in use: joserfc's defaults never decide (DESIGN.md).
        return jwe.encrypt_compact(header, plaintext, key, algorithms=[alg, enc])
    except JoseError as error:
        raise EncryptionKeyError(f"JWE encryption with {alg}/{enc} failed ({type(error).__name__})") from None


def encrypt_nested_jwt(signed_jwt: str, jwks: Mapping[str, Any], *, alg: str, enc: str,
                       kid: str | None = None) -> str:
    """Encrypt an already signed JWT (JWS compact) into a JWE compact string with
    ``cty: "JWT"`` (RFC 7519 §5.2, OIDC Core §16.14: sign, then encrypt)."""
    if signed_jwt.count(".") != 2:
        raise ValueError("encrypt_nested_jwt expects a JWS compact serialization")
    return _encrypt(signed_jwt.encode("ascii"), jwks, alg, enc, kid, {"cty": "JWT"})


def encrypt_claims(claims: Mapping[str, Any], jwks: Mapping[str, Any], *, alg: str, enc: str,
                   kid: str | None = None) -> str:
    """Encrypt a claims set as an unsigned, encrypted JWT (OIDC Core §5.3.2, userinfo
    when the shop registered an encryption algorithm but no signing algorithm)."""
    payload = json.dumps(dict(claims), ensure_ascii=False, separators=(",", ":")).encode()
    return _encrypt(payload, jwks, alg, enc, kid, {"typ": "JWT"})
