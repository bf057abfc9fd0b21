"""Encrypted ID tokens and userinfo, decrypted and validated by openid-client.

``discover`` takes ``decryption: {private_jwk, alg, enc}`` and calls openid-client's
``enableDecryptingResponses`` with exactly that ``enc``; results carry what openid-client
decrypted under ``decrypted`` (``getDecryptedResponses``). The in-process counterpart with
jwcrypto is tests/oidc/test_encryption_to_shops.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey

from tests.conftest import ShopHandle
from tests.interop.harness import LiveGateway, NodeRelyingParty, authorize_in_browser

CASES = [("ECDH-ES+A256KW", "A256GCM", "EC"), ("ECDH-ES", "A128CBC-HS256", "EC"),
         ("RSA-OAEP-256", "A256GCM", "RSA")]


def _encryption_key(kty: str) -> ECKey | RSAKey:
    parameters = {"kid": f"node-enc-{kty.lower()}", "use": "enc"}
    if kty == "EC":
        return ECKey.generate_key("P-256", parameters=parameters, private=True)
    return RSAKey.generate_key(2048, parameters=parameters, private=True)


def _encrypting_shop(make_shop: Callable[..., ShopHandle], key: ECKey | RSAKey, alg: str, enc: str,
                     what: str) -> ShopHandle:
    fields: dict[str, Any] = {f"{what}_encrypted_response_alg": alg,
                              f"{what}_encrypted_response_enc": enc}
    if what == "userinfo":
        fields["userinfo_signed_response_alg"] = "ES256"
    return make_shop("node-jwe", redirect_uris=["https://node-jwe.shop.example/callback"],
                     jwks={"keys": [key.as_dict(private=False)]}, **fields)


def _signed_in(rp: NodeRelyingParty, gateway: LiveGateway, shop: ShopHandle, key: ECKey | RSAKey,
               alg: str, enc: str, metadata: dict[str, str]) -> dict[str, Any]:
    rp.call("discover", issuer=gateway.issuer, client_id=shop.client_id, auth="client_secret_basic",
            client_secret=shop.secret, metadata=metadata,
            decryption={"private_jwk": key.as_dict(private=True), "alg": alg, "enc": enc})
    request = rp.call("authorization_url", redirect_uri=shop.redirect_uri, scope="openid email")
    callback = authorize_in_browser(gateway.browser(), request["url"])
    return dict(rp.call("code_grant", callback_url=callback))


@pytest.mark.parametrize(("alg", "enc", "kty"), CASES)
def test_encrypted_id_token_is_decrypted_and_validated(
        live_gateway: Callable[[], LiveGateway], node_rp: Any,
        make_shop: Callable[..., ShopHandle], alg: str, enc: str, kty: str) -> None:
    key = _encryption_key(kty)
    shop = _encrypting_shop(make_shop, key, alg, enc, "id_token")
    gateway = live_gateway()
    tokens = _signed_in(node_rp(), gateway, shop, key, alg, enc, {
        "id_token_encrypted_response_alg": alg, "id_token_encrypted_response_enc": enc})
    assert tokens["id_token"].count(".") == 4  # compact JWE
    assert tokens["decrypted"]["id_token"]["token_endpoint"].count(".") == 2  # nested, signed
    assert tokens["claims"]["iss"] == gateway.issuer  # validated after decryption


@pytest.mark.parametrize(("alg", "enc", "kty"), CASES)
def test_encrypted_userinfo_is_decrypted_and_validated(
        live_gateway: Callable[[], LiveGateway], node_rp: Any,
        make_shop: Callable[..., ShopHandle], alg: str, enc: str, kty: str) -> None:
    key = _encryption_key(kty)
    shop = _encrypting_shop(make_shop, key, alg, enc, "userinfo")
    gateway = live_gateway()
    rp = node_rp()
    tokens = _signed_in(rp, gateway, shop, key, alg, enc, {
        "userinfo_signed_response_alg": "ES256", "userinfo_encrypted_response_alg": alg,
        "userinfo_encrypted_response_enc": enc})
    userinfo = rp.call("userinfo")  # application/jwt: decrypted, signature and sub checked
    assert userinfo["decrypted"].count(".") == 2
    assert userinfo["sub"] == tokens["claims"]["sub"]
    assert userinfo["email"] == "lilei@example.com"
