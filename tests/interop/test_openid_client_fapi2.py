"""A FAPI 2.0 shop (``profile: fapi2``) driven end to end by ``openid-client``: pushed
authorization request (RFC 9126), ``private_key_jwt`` at /par and /token, PKCE S256, the
``iss`` authorization response parameter (RFC 9207), DPoP-bound tokens (RFC 9449, its
proofs at /par, /token and userinfo), code exchange, ID token and userinfo, all checked by
the library with its defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ShopHandle
from tests.interop.harness import LiveGateway, RelyingPartyError, authorize_in_browser
from tests.interop.test_openid_client import SCOPE, _client_key, _connect, _query, _shop


@pytest.mark.parametrize("alg", ["PS256", "ES256"])
def test_fapi2_shop_signs_in_with_par_private_key_jwt_pkce_and_iss(
        live_gateway: Callable[[], LiveGateway], node_rp: Any,
        make_shop: Callable[..., ShopHandle], alg: str) -> None:
    key = _client_key(alg)
    shop = _shop(make_shop, "node-fapi", "private_key_jwt", profile="fapi2",
                 jwks={"keys": [key.as_dict(private=False)]})
    gateway = live_gateway()
    rp = node_rp()
    metadata = _connect(rp, gateway, shop, "private_key_jwt", private_jwk=key.as_dict(private=True),
                        assertion_alg=alg, dpop_alg="ES256")  # FAPI 2.0: sender-constrained tokens
    assert metadata["pushed_authorization_request_endpoint"] == f"{gateway.issuer}/par"

    request = rp.call("authorization_url", redirect_uri=shop.redirect_uri, scope=SCOPE, par=True)
    assert set(_query(request["url"])) == {"client_id", "request_uri"}  # the rest was pushed
    callback = authorize_in_browser(gateway.browser(), request["url"])
    assert _query(callback)["iss"] == gateway.issuer
    # openid-client checks iss, state, the PKCE verifier, the ID token and its nonce.
    tokens = rp.call("code_grant", callback_url=callback)
    assert tokens["token_type"].lower() == "dpop"
    assert tokens["claims"]["aud"] == shop.client_id
    assert tokens["claims"]["nonce"] == request["nonce"]
    userinfo = rp.call("userinfo")  # and that its sub is the ID token's
    assert userinfo["sub"] == tokens["claims"]["sub"]

    # The same shop without PAR: the gateway answers invalid_request (RFC 9126 §5), which
    # openid-client reports from the callback.
    plain = rp.call("authorization_url", redirect_uri=shop.redirect_uri, scope=SCOPE)
    refused_at = gateway.browser().follow(plain["url"])
    assert refused_at.status_code == 302
    with pytest.raises(RelyingPartyError) as refused:
        rp.call("code_grant", callback_url=refused_at.headers["location"])
    assert refused.value.details["error"] == "invalid_request"
