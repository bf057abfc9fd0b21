"""DPoP (RFC 9449) driven by openid-client (v6): its own proofs, its own nonce retry.

openid-client makes every DPoP proof (``htm``, ``htu``, ``iat``, ``jti``, ``ath``) with a key
pair it generates, checks that the token response says ``token_type: DPoP``, and on
``use_dpop_nonce`` retries once with the gateway's ``DPoP-Nonce``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import ShopHandle
from tests.interop.harness import LiveGateway, RelyingPartyError
from tests.interop.test_openid_client import _connect, _shop, _sign_in


@pytest.mark.parametrize("alg", ["ES256", "PS256", "Ed25519"])
def test_openid_client_gets_and_uses_dpop_bound_tokens(
    live_gateway: Callable[..., LiveGateway], node_rp: Any, make_shop: Callable[..., ShopHandle],
    alg: str,
) -> None:
    shop = _shop(make_shop, "node-dpop", "client_secret_basic", dpop_bound_access_tokens=True)
    gateway = live_gateway()
    rp = node_rp()
    metadata = _connect(rp, gateway, shop, "client_secret_basic", dpop_alg=alg)
    assert alg in metadata["dpop_signing_alg_values_supported"]
    tokens, _ = _sign_in(rp, gateway, shop)
    assert tokens["token_type"].lower() == "dpop"
    assert rp.call("userinfo")["sub"] == tokens["claims"]["sub"]
    introspected = rp.call("introspect", token=tokens["access_token"])
    assert introspected["token_type"] == "DPoP" and introspected["cnf"]["jkt"]
    refreshed = rp.call("refresh")
    assert refreshed["token_type"].lower() == "dpop"
    assert rp.call("userinfo", access_token=refreshed["access_token"])["sub"] == tokens["claims"]["sub"]
    # The same token without a proof, as a bearer token: refused.
    bearer = httpx.get(f"{gateway.issuer}/userinfo",
                       headers={"Authorization": f"Bearer {refreshed['access_token']}"})
    assert bearer.status_code == 401
    assert bearer.headers["www-authenticate"].startswith('DPoP error="invalid_token"')


def test_openid_client_follows_the_nonce_and_binds_public_refresh_tokens(
    live_gateway: Callable[..., LiveGateway], node_rp: Any, make_shop: Callable[..., ShopHandle],
) -> None:
    shop = _shop(make_shop, "node-dpop-public", "none")
    gateway = live_gateway(dpop_nonce_required=True, dpop_required_for_public_clients=True)
    rp = node_rp()
    _connect(rp, gateway, shop, "none", dpop_alg="ES256")
    tokens, _ = _sign_in(rp, gateway, shop)  # use_dpop_nonce, then the retry with the nonce
    assert tokens["token_type"].lower() == "dpop"
    assert rp.call("userinfo")["sub"] == tokens["claims"]["sub"]
    refreshed = rp.call("refresh")
    assert refreshed["token_type"].lower() == "dpop"

    other = node_rp()  # another key: the public client's refresh token is bound to the first
    _connect(other, gateway, shop, "none", dpop_alg="ES256")
    with pytest.raises(RelyingPartyError) as refused:
        other.call("refresh", refresh_token=refreshed["refresh_token"])
    assert refused.value.details["error"] == "invalid_grant", refused.value.details
