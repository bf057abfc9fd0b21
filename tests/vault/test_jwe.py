"""JWE to shops: nested JWTs that an independent library decrypts and whose inner JWS verifies."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwe, jwt
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from gateway.vault import (
    DEFAULT_JWE_ENC,
    SUPPORTED_JWE_ALGS,
    SUPPORTED_JWE_ENCS,
    EncryptionKeyError,
    SigningKeyRing,
    UnsupportedAlgorithmError,
    check_encryption_metadata,
    encrypt_claims,
    encrypt_nested_jwt,
    select_encryption_key,
)

CLAIMS = {"iss": "https://gateway.test", "sub": "pairwise-1", "aud": "shop-a", "name": "李雷"}


@pytest.fixture(scope="module")
def shop_keys() -> dict[str, Key]:
    return {
        "EC": ECKey.generate_key("P-256", parameters={"use": "enc", "kid": "shop-ec"}),
        "RSA": RSAKey.generate_key(2048, parameters={"use": "enc", "kid": "shop-rsa"}),
    }


@pytest.fixture(scope="module")
def shop_jwks(shop_keys: dict[str, Key]) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in shop_keys.values()]}


@pytest.fixture
def id_token(tmp_path: Path) -> tuple[str, SigningKeyRing]:
    ring = SigningKeyRing(tmp_path).load_or_create()  # its own directory: plain PEM files
    return ring.sign(CLAIMS, "ES256"), ring


def _private_for(alg: str, shop_keys: dict[str, Key]) -> Key:
    return shop_keys["RSA" if alg.startswith("RSA") else "EC"]


@pytest.mark.parametrize("enc", SUPPORTED_JWE_ENCS)
@pytest.mark.parametrize("alg", SUPPORTED_JWE_ALGS)
def test_jwcrypto_decrypts_the_nested_jwt_and_the_inner_jws_verifies(
    alg: str, enc: str, shop_keys: dict[str, Key], shop_jwks: dict[str, Any],
    id_token: tuple[str, SigningKeyRing],
) -> None:
    cjwe = pytest.importorskip("jwcrypto.jwe")
    cjwk = pytest.importorskip("jwcrypto.jwk")
    cjwt = pytest.importorskip("jwcrypto.jwt")
    signed, ring = id_token
    token = encrypt_nested_jwt(signed, shop_jwks, alg=alg, enc=enc)

    private = cjwk.JWK(**_private_for(alg, shop_keys).as_dict(private=True))
    message = cjwe.JWE(algs=[alg, enc])
    message.deserialize(token, key=private)
    header = json.loads(message.objects["protected"])
    assert (header["alg"], header["enc"], header["cty"]) == (alg, enc, "JWT")
    assert header["kid"] == _private_for(alg, shop_keys).kid
    assert message.payload.decode() == signed

    verifier = cjwk.JWKSet.from_json(json.dumps(ring.jwks()))
    inner = cjwt.JWT(jwt=message.payload.decode(), key=verifier, algs=["ES256"])
    assert json.loads(inner.claims) == CLAIMS


@pytest.mark.parametrize("alg", ["ECDH-ES+A256KW", "RSA-OAEP-256"])
def test_the_shop_decrypts_with_its_private_key_using_joserfc(
    alg: str, shop_keys: dict[str, Key], shop_jwks: dict[str, Any], id_token: tuple[str, SigningKeyRing],
) -> None:
    signed, ring = id_token
    token = encrypt_nested_jwt(signed, shop_jwks, alg=alg, enc="A256GCM")
    opened = jwe.decrypt_compact(token, _private_for(alg, shop_keys), algorithms=[alg, "A256GCM"])
    assert opened.protected["cty"] == "JWT"
    inner = jwt.decode(opened.plaintext or b"", ring.verification_keys(), algorithms=["ES256"])
    assert inner.claims == CLAIMS


def test_userinfo_claims_can_be_encrypted_without_signing(shop_keys: dict[str, Key],
                                                          shop_jwks: dict[str, Any]) -> None:
    token = encrypt_claims(CLAIMS, shop_jwks, alg="RSA-OAEP-256", enc="A256GCM")
    opened = jwe.decrypt_compact(token, shop_keys["RSA"], algorithms=["RSA-OAEP-256", "A256GCM"])
    assert "cty" not in opened.protected and opened.protected["typ"] == "JWT"
    assert json.loads(opened.plaintext or b"") == CLAIMS


def test_an_x25519_key_serves_ecdh_es() -> None:
    key = OKPKey.generate_key("X25519", parameters={"use": "enc", "kid": "okp"})
    token = encrypt_nested_jwt("a.b.c", {"keys": [key.as_dict(private=False)]}, alg="ECDH-ES", enc="A256GCM")
    assert jwe.decrypt_compact(token, key, algorithms=["ECDH-ES", "A256GCM"]).plaintext == b"a.b.c"


# -- choosing the shop's key ---------------------------------------------------------


def test_signing_keys_and_keys_for_other_algorithms_are_skipped(shop_keys: dict[str, Key]) -> None:
    signing = ECKey.generate_key("P-256", parameters={"use": "sig", "kid": "sig"})
    other_alg = RSAKey.generate_key(2048, parameters={"alg": "RSA-OAEP", "kid": "oaep-only"})
    verify_only = ECKey.generate_key("P-256", parameters={"key_ops": ["verify"], "kid": "verify"})
    jwks = {"keys": [signing.as_dict(private=False), other_alg.as_dict(private=False),
                     verify_only.as_dict(private=False), "not a key", {"kty": "nonsense"},
                     *(k.as_dict(private=False) for k in shop_keys.values())]}
    assert select_encryption_key(jwks, "ECDH-ES+A256KW").kid == "shop-ec"
    assert select_encryption_key(jwks, "RSA-OAEP-256").kid == "shop-rsa"
    assert select_encryption_key(jwks, "RSA-OAEP").kid == "oaep-only"


def test_a_requested_kid_must_match(shop_jwks: dict[str, Any]) -> None:
    assert select_encryption_key(shop_jwks, "RSA-OAEP-256", kid="shop-rsa").kid == "shop-rsa"
    with pytest.raises(EncryptionKeyError, match="kid 'shop-ec'"):
        select_encryption_key(shop_jwks, "RSA-OAEP-256", kid="shop-ec")


def test_a_jwks_without_a_fitting_key_is_refused_clearly() -> None:
    with pytest.raises(EncryptionKeyError, match="no encryption key for ECDH-ES"):
        select_encryption_key({"keys": []}, "ECDH-ES")
    with pytest.raises(EncryptionKeyError, match="no \"keys\" array"):
        select_encryption_key({}, "ECDH-ES")


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_rsa_keys_below_2048_bits_are_refused() -> None:
    weak_bits = 1024  # the point of the test
    numbers = rsa.generate_private_key(65537, weak_bits).public_key().public_numbers()
    weak = {"kty": "RSA", "use": "enc", "n": _b64(numbers.n), "e": _b64(numbers.e)}
    with pytest.raises(EncryptionKeyError):
        select_encryption_key({"keys": [weak]}, "RSA-OAEP-256")


def test_a_published_private_key_is_used_as_a_public_key_only(shop_keys: dict[str, Key]) -> None:
    leaked = shop_keys["EC"].as_dict(private=True)
    assert not select_encryption_key({"keys": [leaked]}, "ECDH-ES+A256KW").is_private


@pytest.mark.parametrize(("alg", "enc"), [("RSA1_5", "A256GCM"), ("dir", "A256GCM"),
                                          ("A256KW", "A256GCM"), ("RSA-OAEP-256", "A128GCM")])
def test_algorithms_outside_the_supported_lists_are_refused(alg: str, enc: str,
                                                            shop_jwks: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        encrypt_nested_jwt("a.b.c", shop_jwks, alg=alg, enc=enc)


def test_only_a_jws_compact_string_is_accepted_as_a_nested_jwt(shop_jwks: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="JWS compact"):
        encrypt_nested_jwt('{"sub": "x"}', shop_jwks, alg="RSA-OAEP-256", enc="A256GCM")


def test_registration_metadata_defaults_enc_and_refuses_enc_alone() -> None:
    assert check_encryption_metadata(None, None) is None
    assert check_encryption_metadata("RSA-OAEP-256", None) == ("RSA-OAEP-256", DEFAULT_JWE_ENC)
    assert check_encryption_metadata("ECDH-ES+A256KW", "A256GCM") == ("ECDH-ES+A256KW", "A256GCM")
    with pytest.raises(UnsupportedAlgorithmError, match="without an alg"):
        check_encryption_metadata(None, "A256GCM")
    with pytest.raises(UnsupportedAlgorithmError):
        check_encryption_metadata("RSA1_5", None)
    with pytest.raises(UnsupportedAlgorithmError):
        check_encryption_metadata("RSA-OAEP", "A192GCM")
