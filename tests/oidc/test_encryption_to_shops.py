"""Shops that register keys get nested JWT ID tokens and encrypted userinfo, which an
independent JOSE library (jwcrypto) decrypts with the shop's private key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt
from starlette.testclient import TestClient

from tests.conftest import ISSUER, Browser, exchange_code, query_of, sign_in

CASES = [("ECDH-ES+A256KW", "A256GCM", {"kty": "EC", "crv": "P-256"}),
         ("RSA-OAEP-256", "A256GCM", {"kty": "RSA", "size": 2048})]


def shop_keys(params: dict[str, Any]) -> jwcrypto_jwk.JWK:
    key = jwcrypto_jwk.JWK.generate(**params, kid="enc-1", use="enc")
    return key


def decrypt(token: str, key: jwcrypto_jwk.JWK, alg: str, enc: str) -> tuple[dict[str, Any], bytes]:
    message = jwcrypto_jwe.JWE()
    message.allowed_algs = [alg, enc]
    message.deserialize(token, key=key)
    return json.loads(message.objects["protected"]), message.payload


def gateway_keys(client: TestClient) -> jwcrypto_jwk.JWKSet:
    return jwcrypto_jwk.JWKSet.from_json(client.get("/jwks").text)


@pytest.mark.parametrize(("alg", "enc", "params"), CASES)
def test_id_token_is_signed_then_encrypted(make_shop: Any, make_client: Any, alg: str, enc: str,
                                           params: dict[str, Any]) -> None:
    key = shop_keys(params)
    shop = make_shop("shop-jwe", jwks={"keys": [json.loads(key.export_public())]},
                     id_token_encrypted_response_alg=alg, id_token_encrypted_response_enc=enc)
    client = make_client()
    final, params_sent, verifier = sign_in(Browser(client), shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    header, inner = decrypt(token["id_token"], key, alg, enc)
    assert header["cty"] == "JWT" and header["kid"] == "enc-1"
    verified = jwcrypto_jwt.JWT(jwt=inner.decode(), key=gateway_keys(client), algs=["ES256"])
    claims = json.loads(verified.claims)
    assert claims["iss"] == ISSUER and claims["aud"] == shop.client_id
    assert claims["nonce"] == params_sent["nonce"]


@pytest.mark.parametrize(("alg", "enc", "params"), CASES)
def test_userinfo_is_signed_then_encrypted(make_shop: Any, make_client: Any, alg: str, enc: str,
                                           params: dict[str, Any]) -> None:
    key = shop_keys(params)
    shop = make_shop("shop-jwe", jwks={"keys": [json.loads(key.export_public())]},
                     userinfo_signed_response_alg="ES256",
                     userinfo_encrypted_response_alg=alg, userinfo_encrypted_response_enc=enc)
    client = make_client()
    final, _, verifier = sign_in(Browser(client), shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    reply = client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert reply.headers["content-type"] == "application/jwt"
    _, inner = decrypt(reply.text, key, alg, enc)
    claims = json.loads(jwcrypto_jwt.JWT(jwt=inner.decode(), key=gateway_keys(client),
                                         algs=["ES256"]).claims)
    assert claims["email"] == "lilei@example.com"
    assert claims["iss"] == ISSUER and claims["aud"] == shop.client_id


def test_userinfo_encrypted_without_signing(make_shop: Any, make_client: Any) -> None:
    key = shop_keys({"kty": "EC", "crv": "P-256"})
    shop = make_shop("shop-jwe", jwks={"keys": [json.loads(key.export_public())]},
                     userinfo_encrypted_response_alg="ECDH-ES+A256KW")
    client = make_client()
    final, _, verifier = sign_in(Browser(client), shop)
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    reply = client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    header, payload = decrypt(reply.text, key, "ECDH-ES+A256KW", "A128CBC-HS256")
    assert header["enc"] == "A128CBC-HS256"  # the default enc (OIDC Registration §2)
    assert json.loads(payload)["nickname"] == "李雷"


def test_discovery_advertises_encryption(client: TestClient) -> None:
    metadata = client.get("/.well-known/openid-configuration").json()
    assert "RSA-OAEP-256" in metadata["id_token_encryption_alg_values_supported"]
    assert "ECDH-ES+A256KW" in metadata["userinfo_encryption_alg_values_supported"]
    assert "A256GCM" in metadata["id_token_encryption_enc_values_supported"]


def test_encryption_without_keys_is_a_config_error(make_shop: Any, make_client: Any) -> None:
    from gateway.errors import ConfigError

    make_shop("shop-jwe", id_token_encrypted_response_alg="RSA-OAEP-256")
    with pytest.raises(ConfigError, match="needs 'jwks' or 'jwks_uri'"):
        make_client()


def test_unsupported_encryption_algorithm_is_a_config_error(make_shop: Any, make_client: Any) -> None:
    from gateway.errors import ConfigError

    key = shop_keys({"kty": "EC", "crv": "P-256"})
    make_shop("shop-jwe", jwks={"keys": [json.loads(key.export_public())]},
              id_token_encrypted_response_alg="RSA1_5")
    with pytest.raises(ConfigError, match="unsupported JWE alg"):
        make_client()
