"""WeChat website QR login and official-account pages, with WeChat imitated by respx."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from gateway.upstream.wechat import fix_nickname
from tests.conftest import ShopHandle
from tests.upstream.conftest import begin, consent_and_tokens, released, shop_error, userinfo

TOKEN_URL = "https://api.weixin.qq.com/sns/oauth2/access_token"
USERINFO_URL = "https://api.weixin.qq.com/sns/userinfo"
WECHAT_UA = "Mozilla/5.0 (iPhone) AppleWebKit/605.1.15 MicroMessenger/8.0.47 NetType/WIFI"
OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
UNIONID = "o6_bmasdasdsad6_2sgVt7hMZOPfL"


def text_json(body: dict[str, Any]) -> httpx.Response:
    """WeChat's habit: JSON served as text/plain."""
    import json

    return httpx.Response(200, text=json.dumps(body, ensure_ascii=False),
                          headers={"content-type": "text/plain"})


TOKEN = {"access_token": "ACCESS", "expires_in": 7200, "refresh_token": "REFRESH",
         "openid": OPENID, "scope": "snsapi_login", "unionid": UNIONID}
USERINFO = {"openid": OPENID, "nickname": "小明", "sex": 1, "province": "广东", "city": "深圳",
            "country": "中国", "headimgurl": "https://thirdwx.qlogo.cn/mmopen/abc/132",
            "privilege": [], "unionid": UNIONID}


@pytest.fixture
def wechat_providers(write_secret: Callable[..., dict[str, str]]) -> list[dict[str, Any]]:
    secret = write_secret("wechat.secret", "wx-app-secret")
    return [
        {"kind": "wechat", "product": "website", "id": "wechat-web", "name": "WeChat",
         "name_zh": "微信", "app_id": "wx0123456789abcdef", "secret": secret},
        {"kind": "wechat", "product": "official_account", "id": "wechat-oa", "name": "WeChat",
         "name_zh": "微信", "app_id": "wxfedcba9876543210", "secret": secret,
         "scope": "snsapi_userinfo"},
    ]


@pytest.fixture
def gateway(upstream_client: Callable[..., TestClient], wechat_providers: list[dict[str, Any]],
            shop: ShopHandle) -> TestClient:
    return upstream_client(wechat_providers)


def test_website_qr_login_maps_the_profile_and_hides_the_ids(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        token = mock.get(TOKEN_URL).mock(return_value=text_json(TOKEN))
        info = mock.get(USERINFO_URL).mock(return_value=text_json(USERINFO))
        sign_in = begin(gateway, shop, "wechat-web")
        url = urlsplit(sign_in.location)
        assert f"{url.scheme}://{url.netloc}{url.path}" == "https://open.weixin.qq.com/connect/qrconnect"
        assert url.fragment == "wechat_redirect"
        assert [k for k, _ in (p.split("=") for p in url.query.split("&"))] == [
            "appid", "redirect_uri", "response_type", "scope", "state"]  # WeChat checks the order
        assert sign_in.upstream_query["scope"] == "snsapi_login"
        assert sign_in.state.isalnum() and len(sign_in.state) <= 128
        page = sign_in.callback(code="wx-code", state=sign_in.state)
        sent = parse_qs(urlsplit(str(token.calls.last.request.url)).query)
        assert sent == {"appid": ["wx0123456789abcdef"], "secret": ["wx-app-secret"],
                        "code": ["wx-code"], "grant_type": ["authorization_code"]}
        assert parse_qs(urlsplit(str(info.calls.last.request.url)).query)["lang"] == ["zh_CN"]
        tokens = consent_and_tokens(gateway, sign_in, page)
    claims = userinfo(gateway, tokens)
    assert claims["nickname"] == "小明"
    assert claims["picture"] == USERINFO["headimgurl"]
    assert released(claims) <= {"nickname", "picture", "email", "age_band", "phone_number"}
    text = str(claims) + str(tokens)
    assert OPENID not in text and UNIONID not in text


def test_stored_profile_holds_catalogue_fields_only(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(return_value=text_json(TOKEN))
        mock.get(USERINFO_URL).mock(return_value=text_json(USERINFO))
        sign_in = begin(gateway, shop, "wechat-web")
        page = sign_in.callback(code="wx-code", state=sign_in.state)
        consent_and_tokens(gateway, sign_in, page)
    identities = gateway.app.state.gateway.provider.identities  # type: ignore[attr-defined]
    session_person = next(iter(_people(gateway)))
    assert identities.profile(session_person) == {
        "nickname": "小明", "avatar": USERINFO["headimgurl"], "gender": "male", "region": "CN-GD",
        "city": "深圳"}


def _people(client: TestClient) -> set[str]:
    store = client.app.state.gateway.store  # type: ignore[attr-defined]
    return {key.decode().split("{p:")[1].split("}")[0]
            for key in store.redis.scan_iter(match=f"{store.keys.prefix}{{p:*}}:profile")}


@pytest.mark.parametrize(("errcode", "shop_sees"), [
    (40029, "access_denied"),   # invalid code
    (40163, "access_denied"),   # code already used
    (42003, "access_denied"),   # code expired
    (-1, "temporarily_unavailable"),     # system busy
    (45011, "temporarily_unavailable"),  # rate limited
    (40125, "temporarily_unavailable"),  # our app secret is wrong: the operator must fix it
    (40013, "temporarily_unavailable"),  # our appid is wrong
])
def test_errcode_in_a_200_body(gateway: TestClient, shop: ShopHandle, errcode: int, shop_sees: str) -> None:
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(return_value=text_json(
            {"errcode": errcode, "errmsg": "invalid code, rid: 6523a1f0-1b2c3d4e-5f6a7b8c"}))
        sign_in = begin(gateway, shop, "wechat-web")
        page = sign_in.callback(code="wx-code", state=sign_in.state)
    assert shop_error(page) == shop_sees


def test_userinfo_errcode_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(return_value=text_json(TOKEN))
        mock.get(USERINFO_URL).mock(return_value=text_json({"errcode": 40003, "errmsg": "invalid openid"}))
        sign_in = begin(gateway, shop, "wechat-web")
        page = sign_in.callback(code="wx-code", state=sign_in.state)
    assert shop_error(page) == "access_denied"


def test_empty_gbk_html_body_is_temporarily_unavailable(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(return_value=httpx.Response(
            200, content=b"", headers={"content-type": "text/html; charset=gbk"}))
        sign_in = begin(gateway, shop, "wechat-web")
        page = sign_in.callback(code="wx-code", state=sign_in.state)
    assert shop_error(page) == "temporarily_unavailable"


def test_timeout_is_temporarily_unavailable(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(side_effect=httpx.ConnectTimeout("slow"))
        sign_in = begin(gateway, shop, "wechat-web")
        page = sign_in.callback(code="wx-code", state=sign_in.state)
    assert page.status_code == 502 and shop_error(page) == "temporarily_unavailable"


def test_refusal_comes_back_without_a_code(gateway: TestClient, shop: ShopHandle) -> None:
    sign_in = begin(gateway, shop, "wechat-web")
    page = sign_in.callback(state=sign_in.state)
    assert shop_error(page) == "access_denied"


def test_wrong_state_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        token = mock.get(TOKEN_URL).mock(return_value=text_json(TOKEN))
        sign_in = begin(gateway, shop, "wechat-web")
        page = sign_in.callback(code="wx-code", state="STATE")
        assert not token.called
    assert page.status_code == 400


def test_mis_encoded_nickname_is_repaired() -> None:
    garbled = "小明".encode().decode("latin-1")
    assert fix_nickname(garbled) == "小明"
    assert fix_nickname("José") == "José"  # genuine Latin-1 text is left alone
    assert fix_nickname("小明") == "小明" and fix_nickname(None) is None


def test_official_account_is_offered_only_inside_wechat(gateway: TestClient, shop: ShopHandle) -> None:
    from tests.conftest import Browser, authorize_params, pkce_pair

    _, challenge = pkce_pair()
    outside = Browser(gateway).follow(f"/authorize?{httpx.QueryParams(authorize_params(shop, challenge))}")  # type: ignore[arg-type]
    assert "/upstream/wechat-web/start" in outside.text
    assert "/upstream/wechat-oa/start" not in outside.text
    gateway.headers["user-agent"] = WECHAT_UA
    inside = Browser(gateway).follow(f"/authorize?{httpx.QueryParams(authorize_params(shop, challenge))}")  # type: ignore[arg-type]
    assert "/upstream/wechat-oa/start" in inside.text
    assert "/upstream/wechat-web/start" not in inside.text
    assert "/static/logos/wechat.svg" in inside.text


def test_official_account_base_scope_gives_the_openid_only(
    upstream_client: Callable[..., TestClient], wechat_providers: list[dict[str, Any]], shop: ShopHandle,
) -> None:
    wechat_providers[1]["scope"] = "snsapi_base"
    client = upstream_client(wechat_providers)
    client.headers["user-agent"] = WECHAT_UA
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(return_value=text_json(
            {"access_token": "A", "expires_in": 7200, "openid": OPENID, "scope": "snsapi_base"}))
        info = mock.get(USERINFO_URL).mock(return_value=text_json(USERINFO))
        sign_in = begin(client, shop, "wechat-oa")
        assert sign_in.location.startswith("https://open.weixin.qq.com/connect/oauth2/authorize?appid=")
        assert sign_in.upstream_query["scope"] == "snsapi_base"
        tokens = consent_and_tokens(client, sign_in, sign_in.callback(code="c", state=sign_in.state))
        assert not info.called
    assert released(userinfo(client, tokens)) == set()  # nothing but the pairwise sub


def test_snapshot_page_user_is_not_signed_in(gateway: TestClient, shop: ShopHandle) -> None:
    gateway.headers["user-agent"] = WECHAT_UA
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(return_value=text_json(
            {"access_token": "A", "expires_in": 7200, "openid": OPENID, "scope": "snsapi_base",
             "is_snapshotuser": 1}))
        sign_in = begin(gateway, shop, "wechat-oa")
        page = sign_in.callback(code="c", state=sign_in.state)
    assert shop_error(page) == "access_denied"


def test_unionid_makes_website_and_official_account_one_person(gateway: TestClient,
                                                              shop: ShopHandle) -> None:
    subjects = []
    with respx.mock as mock:
        token = mock.get(TOKEN_URL)
        mock.get(USERINFO_URL).mock(return_value=text_json(USERINFO))
        token.mock(return_value=text_json(TOKEN))
        web = begin(gateway, shop, "wechat-web")
        subjects.append(userinfo(gateway, consent_and_tokens(
            gateway, web, web.callback(code="c1", state=web.state)))["sub"])
        gateway.headers["user-agent"] = WECHAT_UA
        # The official account has its own openid for the person, and the same unionid.
        token.mock(return_value=text_json(
            {**TOKEN, "openid": "oOA-other-openid", "scope": "snsapi_userinfo"}))
        mock.get(USERINFO_URL).mock(return_value=text_json({**USERINFO, "openid": "oOA-other-openid"}))
        oa = begin(gateway, shop, "wechat-oa")
        subjects.append(userinfo(gateway, consent_and_tokens(
            gateway, oa, oa.callback(code="c2", state=oa.state)))["sub"])
    assert subjects[0] == subjects[1]


def test_openid_seen_first_then_with_unionid_stays_one_person(
    upstream_client: Callable[..., TestClient], wechat_providers: list[dict[str, Any]], shop: ShopHandle,
) -> None:
    wechat_providers[1]["scope"] = "snsapi_base"
    base_client = upstream_client(wechat_providers)
    base_client.headers["user-agent"] = WECHAT_UA
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(return_value=text_json(
            {"access_token": "A", "expires_in": 7200, "openid": OPENID, "scope": "snsapi_base"}))
        first = begin(base_client, shop, "wechat-oa")
        before = userinfo(base_client, consent_and_tokens(
            base_client, first, first.callback(code="c1", state=first.state)))["sub"]
    wechat_providers[1]["scope"] = "snsapi_userinfo"
    full_client = upstream_client(wechat_providers)
    full_client.headers["user-agent"] = WECHAT_UA
    with respx.mock as mock:
        mock.get(TOKEN_URL).mock(return_value=text_json({**TOKEN, "scope": "snsapi_userinfo"}))
        mock.get(USERINFO_URL).mock(return_value=text_json(USERINFO))
        second = begin(full_client, shop, "wechat-oa")
        after = userinfo(full_client, consent_and_tokens(
            full_client, second, second.callback(code="c2", state=second.state)))["sub"]
    assert before == after
