"""The mini-program API: a shop's back end trades a wx.login code for a gateway code."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from starlette.testclient import TestClient

from gateway.errors import ConfigError
from tests.conftest import ShopHandle, pkce_pair
from tests.upstream.conftest import begin, consent_and_tokens, userinfo

SESSION_URL = "https://api.weixin.qq.com/sns/jscode2session"
OPENID = "oMiniProgramOpenid000000001"
UNIONID = "oUnion00000000000000000001"
SESSION_KEY = "tiihtNczf5v6AKRyjwEUhQ=="


@pytest.fixture
def mini_settings(write_secret: Callable[..., dict[str, str]]) -> list[dict[str, Any]]:
    secret = write_secret("wechat-mp.secret", "mp-secret")
    return [
        {"kind": "wechat", "product": "mini_program", "id": "shop-mp", "name": "Mini program",
         "app_id": "wx1111222233334444", "secret": secret, "shops": ["shop-a"]},
        {"kind": "wechat", "product": "website", "id": "wechat-web", "name": "WeChat",
         "app_id": "wx0123456789abcdef", "secret": secret},
    ]


@pytest.fixture
def gateway(upstream_client: Callable[..., TestClient], mini_settings: list[dict[str, Any]],
            shop: ShopHandle) -> TestClient:
    return upstream_client(mini_settings)


def session(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, text=json.dumps(body), headers={"content-type": "text/plain"})


def mini_login(client: TestClient, shop: ShopHandle, js_code: str = "wx-login-code",
               **fields: str) -> tuple[httpx.Response, str]:
    verifier, challenge = pkce_pair()
    data = {"js_code": js_code, "code_challenge": challenge, "code_challenge_method": "S256",
            **fields}
    auth = (shop.client_id, shop.secret) if shop.secret else None
    return client.post("/miniprogram/shop-mp/login", data=data, auth=auth), verifier  # type: ignore[return-value]


def redeem(client: TestClient, shop: ShopHandle, code: str, verifier: str) -> Any:
    return client.post("/token", data={"grant_type": "authorization_code", "code": code,
                                       "code_verifier": verifier}, auth=(shop.client_id, shop.secret))


def test_code_for_tokens_without_any_wechat_identifier(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        route = mock.get(SESSION_URL).mock(return_value=session(
            {"openid": OPENID, "session_key": SESSION_KEY, "unionid": UNIONID}))
        reply, verifier = mini_login(gateway, shop, nonce="n-123", scope="openid profile")
        assert route.calls.last.request.url.params["js_code"] == "wx-login-code"
        assert route.calls.last.request.url.params["appid"] == "wx1111222233334444"
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"code", "expires_in", "iss", "token_endpoint"}
    for secret in (OPENID, UNIONID, SESSION_KEY):
        assert secret not in reply.text
    tokens = redeem(gateway, shop, body["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    keys = KeySet.import_key_set(gateway.get("/jwks").json())
    id_token = jwt.decode(tokens.json()["id_token"], keys, algorithms=["ES256", "RS256"]).claims
    assert id_token["aud"] == shop.client_id and id_token["nonce"] == "n-123"
    for secret in (OPENID, UNIONID, SESSION_KEY):
        assert secret not in tokens.text
    claims = userinfo(gateway, tokens.json())
    assert set(claims) == {"sub"} and claims["sub"] == id_token["sub"]  # nothing consented yet


def test_session_key_is_never_stored(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get(SESSION_URL).mock(return_value=session(
            {"openid": OPENID, "session_key": SESSION_KEY, "unionid": UNIONID}))
        mini_login(gateway, shop)
    store = gateway.app.state.gateway.store  # type: ignore[attr-defined]
    for key in store.redis.scan_iter(match=f"{store.keys.prefix}*"):
        value = store.redis.dump(key) or b""
        for secret in (OPENID, UNIONID, SESSION_KEY):
            assert secret.encode() not in key and secret.encode() not in value


def test_same_person_as_the_website_login_through_the_unionid(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get("https://api.weixin.qq.com/sns/oauth2/access_token").mock(return_value=session(
            {"access_token": "A", "openid": "oWebsiteOpenid", "scope": "snsapi_login", "unionid": UNIONID}))
        mock.get("https://api.weixin.qq.com/sns/userinfo").mock(return_value=session(
            {"openid": "oWebsiteOpenid", "nickname": "小红", "unionid": UNIONID}))
        sign_in = begin(gateway, shop, "wechat-web")
        web_claims = userinfo(gateway, consent_and_tokens(
            gateway, sign_in, sign_in.callback(code="c", state=sign_in.state)))
        mock.get(SESSION_URL).mock(return_value=session(
            {"openid": OPENID, "session_key": SESSION_KEY, "unionid": UNIONID}))
        reply, verifier = mini_login(gateway, shop, scope="openid profile")
    claims = userinfo(gateway, redeem(gateway, shop, reply.json()["code"], verifier).json())
    assert claims["sub"] == web_claims["sub"]
    assert claims.get("nickname") == "小红"  # consented on the website, for this shop


def test_shop_must_authenticate(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        route = mock.get(SESSION_URL)
        wrong = ShopHandle(shop.client_id, "not-the-secret", shop.redirect_uri)
        reply, _ = mini_login(gateway, wrong)
        assert not route.called
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_client"


def test_shop_not_listed_for_the_mini_program_is_refused(
    upstream_client: Callable[..., TestClient], mini_settings: list[dict[str, Any]], shop: ShopHandle,
    make_shop: Callable[..., ShopHandle],
) -> None:
    other = make_shop("shop-b")  # a real shop, but not the mini program's
    client = upstream_client(mini_settings)
    with respx.mock as mock:
        route = mock.get(SESSION_URL)
        reply, _ = mini_login(client, other)
        assert not route.called
    assert reply.status_code == 400 and reply.json()["error"] == "unauthorized_client"


def test_public_client_cannot_use_it(upstream_client: Callable[..., TestClient],
                                     mini_settings: list[dict[str, Any]],
                                     make_shop: Callable[..., ShopHandle]) -> None:
    public = make_shop("shop-a", token_endpoint_auth_method="none")
    client = upstream_client(mini_settings)
    with respx.mock as mock:
        route = mock.get(SESSION_URL)
        reply, _ = mini_login(client, public)
        assert not route.called
    assert reply.json()["error"] == "invalid_client"


def test_pkce_is_required(gateway: TestClient, shop: ShopHandle) -> None:
    reply = gateway.post("/miniprogram/shop-mp/login", data={"js_code": "c"},
                         auth=(shop.client_id, shop.secret))  # type: ignore[arg-type]
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_request"


def test_unknown_mini_program_is_404(gateway: TestClient, shop: ShopHandle) -> None:
    reply = gateway.post("/miniprogram/nope/login", data={"js_code": "c"},
                         auth=(shop.client_id, shop.secret))  # type: ignore[arg-type]
    assert reply.status_code == 404


@pytest.mark.parametrize(("errcode", "status", "error"), [
    (40029, 400, "invalid_grant"),    # invalid code
    (40163, 400, "invalid_grant"),    # code already used
    (40226, 400, "invalid_grant"),    # high-risk user blocked
    (45011, 503, "temporarily_unavailable"),  # rate limited
    (-1, 503, "temporarily_unavailable"),     # busy
])
def test_wechat_errcodes(gateway: TestClient, shop: ShopHandle, errcode: int, status: int,
                         error: str) -> None:
    with respx.mock as mock:
        mock.get(SESSION_URL).mock(return_value=session({"errcode": errcode, "errmsg": "x, rid: 1"}))
        reply, _ = mini_login(gateway, shop)
    assert reply.status_code == status and reply.json()["error"] == error


def test_timeout_and_non_json_are_temporarily_unavailable(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        route = mock.get(SESSION_URL).mock(side_effect=httpx.ReadTimeout("slow"))
        assert mini_login(gateway, shop)[0].json()["error"] == "temporarily_unavailable"
        route.mock(side_effect=None, return_value=httpx.Response(200, text="<html></html>"))
        assert mini_login(gateway, shop)[0].json()["error"] == "temporarily_unavailable"


def test_gateway_code_works_once(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get(SESSION_URL).mock(return_value=session({"openid": OPENID, "session_key": SESSION_KEY}))
        reply, verifier = mini_login(gateway, shop)
    code = reply.json()["code"]
    assert redeem(gateway, shop, code, verifier).status_code == 200
    replay = redeem(gateway, shop, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


def test_gateway_code_needs_the_verifier(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get(SESSION_URL).mock(return_value=session({"openid": OPENID, "session_key": SESSION_KEY}))
        reply, _ = mini_login(gateway, shop)
    wrong = redeem(gateway, shop, reply.json()["code"], pkce_pair()[0])
    assert wrong.status_code == 400


def test_mini_program_naming_an_unknown_shop_stops_start_up(
    upstream_client: Callable[..., TestClient], mini_settings: list[dict[str, Any]], shop: ShopHandle,
) -> None:
    mini_settings[0]["shops"] = ["no-such-shop"]
    with pytest.raises(ConfigError, match="unknown shops"):
        upstream_client(mini_settings)


def test_mini_program_sign_in_is_audited_like_a_browser_sign_in(gateway: TestClient,
                                                                shop: ShopHandle) -> None:
    from gateway.audit import AuditFilter

    with respx.mock as mock:
        mock.get(SESSION_URL).mock(return_value=session({"openid": OPENID, "session_key": SESSION_KEY}))
        reply, verifier = mini_login(gateway, shop)
    redeem(gateway, shop, reply.json()["code"], verifier)
    audit = gateway.app.state.gateway.provider.audit  # type: ignore[attr-defined]
    page = audit.query.page(AuditFilter(), cursor=0, limit=100)
    actions = [item.event.action for item in page.items if item.event.action != "policy_loaded"]
    assert actions == ["sign_in", "code_issued", "token_issued"]
    assert OPENID not in str([item.event for item in page.items])


def test_mini_program_logins_are_limited_per_authenticated_shop(
        upstream_client: Callable[..., TestClient], mini_settings: list[dict[str, Any]],
        shop: ShopHandle) -> None:
    client = upstream_client(mini_settings,
                             rate_limit_miniprogram_per_shop={"count": 1, "per_seconds": 3600, "burst": 3})
    assert shop.secret
    statuses = []
    with respx.mock as mock:
        mock.get(SESSION_URL).mock(return_value=session({"openid": OPENID, "session_key": SESSION_KEY}))
        for index in range(4):
            _, challenge = pkce_pair()
            reply = client.post("/miniprogram/shop-mp/login", auth=(shop.client_id, shop.secret), data={
                "js_code": f"code-{index}", "code_challenge": challenge, "code_challenge_method": "S256"})
            statuses.append(reply.status_code)
        assert reply.json()["error"] == "temporarily_unavailable"
    assert statuses == [200, 200, 200, 429]


def test_a_fapi2_shops_mini_program_codes_live_at_most_60_seconds(
        upstream_client: Callable[..., TestClient], mini_settings: list[dict[str, Any]],
        make_shop: Callable[..., ShopHandle]) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "fapi-mp"}, private=True)
    shop = make_shop("shop-a", profile="fapi2", token_endpoint_auth_method="private_key_jwt",
                     jwks={"keys": [key.as_dict(private=False)]})
    client = upstream_client(mini_settings, code_ttl=300)
    now = int(time.time())
    assertion = jwt.encode({"alg": "ES256", "kid": "fapi-mp"}, {
        "iss": shop.client_id, "sub": shop.client_id, "aud": "https://gateway.test", "iat": now,
        "exp": now + 60, "jti": secrets.token_urlsafe(8)}, key, algorithms=["ES256"])
    with respx.mock as mock:
        mock.get(SESSION_URL).mock(return_value=session({"openid": OPENID, "session_key": SESSION_KEY}))
        reply, _ = mini_login(client, shop, client_assertion=assertion,
                              client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    assert reply.status_code == 200, reply.text
    assert reply.json()["expires_in"] == 60
