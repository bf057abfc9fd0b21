"""Alipay through its signed open-API gateway, imitated with respx and our own key pairs.

The imitation checks the gateway's RSA2 request signature with the app's public key, and
signs its answers with "Alipay's" private key over the raw text of the ``*_response``
member, the way Alipay does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.testclient import TestClient

from gateway.upstream.alipay import sign_content, top_level_members
from tests.conftest import ShopHandle
from tests.upstream.conftest import begin, consent_and_tokens, shop_error, userinfo

GATEWAY_URL = "https://openapi.alipay.com/gateway.do"
APP_ID = "2021000123456789"
USER_ID = "2088102175953034"


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def alipay_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_private(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _bare_public(key: rsa.RSAPrivateKey) -> str:
    """The form Alipay's console shows: base64 DER, no PEM armour."""
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _sign(key: rsa.RSAPrivateKey, text: str) -> str:
    return base64.b64encode(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


class FakeAlipay:
    def __init__(self, mock: respx.MockRouter, app_key: rsa.RSAPrivateKey,
                 alipay_key: rsa.RSAPrivateKey) -> None:
        self.app_public = app_key.public_key()
        self.alipay_key = alipay_key
        self.answers: dict[str, dict[str, Any]] = {
            "alipay.system.oauth.token": {
                "user_id": USER_ID, "open_id": "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5",
                "access_token": "authusrB", "expires_in": "1296000", "re_expires_in": 2592000,
                "refresh_token": "refresh", "auth_start": "2026-11-25 10:00:00"},
            "alipay.user.info.share": {
                "code": "10000", "msg": "Success", "user_id": USER_ID, "nick_name": "支付宝小明",
                "avatar": "https://tfs.alipayobjects.com/images/partner/T1abc", "gender": "F",
                "province": "浙江省", "city": "杭州市", "mobile": "13900001111",
                "email": "xiaoming@example.com", "person_birthday": "19920305", "cert_type": "0",
                "cert_no": "330106199203050022", "user_name": "王小明"},
        }
        self.errors: dict[str, dict[str, Any]] = {}  # method -> error_response
        self.corrupt_signature = False
        self.unsigned = False
        self.route = mock.post(GATEWAY_URL).mock(side_effect=self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.content.decode()))
        signature = base64.b64decode(params["sign"])
        # The gateway's request signature must verify (raises otherwise: the test fails).
        self.app_public.verify(signature, sign_content(params).encode(), padding.PKCS1v15(),
                               hashes.SHA256())
        assert params["sign_type"] == "RSA2" and params["charset"] == "utf-8"
        method = params["method"]
        if method in self.errors:
            name, body = "error_response", self.errors[method]
        else:
            name, body = method.replace(".", "_") + "_response", self.answers[method]
        raw = json.dumps(body)  # \\u-escaped Chinese: the signature covers these exact bytes
        sign = _sign(self.alipay_key, raw)
        if self.corrupt_signature:
            sign = _sign(self.alipay_key, raw + " ")
        text = f'{{"{name}":{raw}}}' if self.unsigned else f'{{"{name}":{raw},"sign":"{sign}"}}'
        return httpx.Response(200, text=text, headers={"content-type": "text/html;charset=utf-8"})


@pytest.fixture
def alipay_settings(write_secret: Callable[..., dict[str, str]], app_key: rsa.RSAPrivateKey,
                    alipay_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return {"kind": "alipay", "id": "alipay", "name": "Alipay", "name_zh": "支付宝", "app_id": APP_ID,
            "app_private_key": write_secret("alipay-app.pem", _pem_private(app_key)),
            "alipay_public_key": write_secret("alipay-public.txt", _bare_public(alipay_key))}


@pytest.fixture
def gateway(upstream_client: Callable[..., TestClient], alipay_settings: dict[str, Any],
            shop: ShopHandle) -> TestClient:
    return upstream_client([alipay_settings])


def test_sign_in_maps_the_profile(gateway: TestClient, shop: ShopHandle, app_key: rsa.RSAPrivateKey,
                                  alipay_key: rsa.RSAPrivateKey) -> None:
    with respx.mock as mock:
        alipay = FakeAlipay(mock, app_key, alipay_key)
        sign_in = begin(gateway, shop, "alipay", scope="openid profile email phone")
        assert sign_in.location.startswith("https://openauth.alipay.com/oauth2/publicAppAuthorize.htm?")
        query = sign_in.upstream_query
        assert query["app_id"] == APP_ID and query["scope"] == "auth_user"
        assert len(sign_in.state) <= 100
        page = sign_in.callback(auth_code="ali-code", app_id=APP_ID, source="alipay_wallet",
                                scope="auth_user", state=sign_in.state)
        calls = [dict(parse_qsl(c.request.content.decode())) for c in alipay.route.calls]
        assert [c["method"] for c in calls] == ["alipay.system.oauth.token", "alipay.user.info.share"]
        assert calls[0]["code"] == "ali-code" and calls[0]["grant_type"] == "authorization_code"
        assert calls[1]["auth_token"] == "authusrB"
        tokens = consent_and_tokens(gateway, sign_in, page)
    claims = userinfo(gateway, tokens)
    assert claims["nickname"] == "支付宝小明"
    assert claims["phone_number"] == "139****1111"  # the shop's policy masks it
    assert USER_ID not in json.dumps(claims) and "330106199203050022" not in json.dumps(claims)


def test_profile_fields_are_normalised(gateway: TestClient, shop: ShopHandle, app_key: rsa.RSAPrivateKey,
                                       alipay_key: rsa.RSAPrivateKey) -> None:
    with respx.mock as mock:
        FakeAlipay(mock, app_key, alipay_key)
        sign_in = begin(gateway, shop, "alipay")
        consent_and_tokens(gateway, sign_in, sign_in.callback(auth_code="c", state=sign_in.state))
    store = gateway.app.state.gateway.store  # type: ignore[attr-defined]
    person = next(k.decode().split("{p:")[1].split("}")[0]
                  for k in store.redis.scan_iter(match=f"{store.keys.prefix}{{p:*}}:profile"))
    profile = gateway.app.state.gateway.provider.identities.profile(person)  # type: ignore[attr-defined]
    assert profile == {
        "nickname": "支付宝小明", "avatar": "https://tfs.alipayobjects.com/images/partner/T1abc",
        "gender": "female", "region": "CN-ZJ", "city": "杭州", "phone": "13900001111",
        "email": "xiaoming@example.com", "birthdate": "1992-03-05", "real_name": "王小明",
        "id_number": "330106199203050022",
    }


@pytest.mark.parametrize(("error", "shop_sees"), [
    ({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.code-invalid",
      "sub_msg": "授权码code无效"}, "access_denied"),
    ({"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"},
     "temporarily_unavailable"),
    ({"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature"},
     "temporarily_unavailable"),
])
def test_token_error_response(gateway: TestClient, shop: ShopHandle, app_key: rsa.RSAPrivateKey,
                              alipay_key: rsa.RSAPrivateKey, error: dict[str, Any], shop_sees: str) -> None:
    with respx.mock as mock:
        alipay = FakeAlipay(mock, app_key, alipay_key)
        alipay.errors["alipay.system.oauth.token"] = error
        sign_in = begin(gateway, shop, "alipay")
        page = sign_in.callback(auth_code="c", state=sign_in.state)
    assert shop_error(page) == shop_sees


def test_user_info_business_error(gateway: TestClient, shop: ShopHandle, app_key: rsa.RSAPrivateKey,
                                  alipay_key: rsa.RSAPrivateKey) -> None:
    with respx.mock as mock:
        alipay = FakeAlipay(mock, app_key, alipay_key)
        alipay.answers["alipay.user.info.share"] = {
            "code": "20001", "msg": "Insufficient Token Permissions", "sub_code": "aop.invalid-auth-token"}
        sign_in = begin(gateway, shop, "alipay")
        page = sign_in.callback(auth_code="c", state=sign_in.state)
    assert shop_error(page) == "access_denied"


def test_bad_response_signature_is_refused(gateway: TestClient, shop: ShopHandle,
                                           app_key: rsa.RSAPrivateKey,
                                           alipay_key: rsa.RSAPrivateKey) -> None:
    with respx.mock as mock:
        alipay = FakeAlipay(mock, app_key, alipay_key)
        alipay.corrupt_signature = True
        sign_in = begin(gateway, shop, "alipay")
        page = sign_in.callback(auth_code="c", state=sign_in.state)
        assert alipay.route.call_count == 1  # nothing more is asked of an untrusted answer
    assert shop_error(page) == "access_denied"


def test_answer_signed_by_another_key_is_refused(gateway: TestClient, shop: ShopHandle,
                                                 app_key: rsa.RSAPrivateKey) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with respx.mock as mock:
        FakeAlipay(mock, app_key, impostor)
        sign_in = begin(gateway, shop, "alipay")
        page = sign_in.callback(auth_code="c", state=sign_in.state)
    assert shop_error(page) == "access_denied"


def test_unsigned_success_is_refused(gateway: TestClient, shop: ShopHandle, app_key: rsa.RSAPrivateKey,
                                     alipay_key: rsa.RSAPrivateKey) -> None:
    with respx.mock as mock:
        alipay = FakeAlipay(mock, app_key, alipay_key)
        alipay.unsigned = True
        sign_in = begin(gateway, shop, "alipay")
        page = sign_in.callback(auth_code="c", state=sign_in.state)
    assert shop_error(page) == "access_denied"


def test_user_info_about_another_user_is_refused(gateway: TestClient, shop: ShopHandle,
                                                 app_key: rsa.RSAPrivateKey,
                                                 alipay_key: rsa.RSAPrivateKey) -> None:
    with respx.mock as mock:
        alipay = FakeAlipay(mock, app_key, alipay_key)
        alipay.answers["alipay.user.info.share"]["user_id"] = "2088000000000001"
        sign_in = begin(gateway, shop, "alipay")
        page = sign_in.callback(auth_code="c", state=sign_in.state)
    assert shop_error(page) == "access_denied"


def test_non_json_answer_and_timeout_are_temporarily_unavailable(gateway: TestClient,
                                                                 shop: ShopHandle) -> None:
    with respx.mock as mock:
        route = mock.post(GATEWAY_URL).mock(return_value=httpx.Response(200, text="<html>busy</html>"))
        sign_in = begin(gateway, shop, "alipay")
        assert shop_error(sign_in.callback(auth_code="c", state=sign_in.state)) == "temporarily_unavailable"
        route.mock(side_effect=httpx.ReadTimeout("slow"))
        sign_in = begin(gateway, shop, "alipay")
        assert shop_error(sign_in.callback(auth_code="c", state=sign_in.state)) == "temporarily_unavailable"


def test_callback_without_auth_code_or_for_another_app_is_refused(gateway: TestClient,
                                                                 shop: ShopHandle) -> None:
    with respx.mock as mock:
        route = mock.post(GATEWAY_URL)
        declined = begin(gateway, shop, "alipay")
        assert shop_error(declined.callback(state=declined.state)) == "access_denied"
        other_app = begin(gateway, shop, "alipay")
        page = other_app.callback(auth_code="c", app_id="2021999999999999", state=other_app.state)
        assert shop_error(page) == "access_denied"
        assert not route.called


def test_code_replay_and_wrong_state(gateway: TestClient, shop: ShopHandle, app_key: rsa.RSAPrivateKey,
                                     alipay_key: rsa.RSAPrivateKey) -> None:
    with respx.mock as mock:
        alipay = FakeAlipay(mock, app_key, alipay_key)
        sign_in = begin(gateway, shop, "alipay")
        consent_and_tokens(gateway, sign_in, sign_in.callback(auth_code="c", state=sign_in.state))
        assert sign_in.callback(auth_code="c", state=sign_in.state).status_code == 400  # replay
        calls = alipay.route.call_count
        assert sign_in.callback(auth_code="c", state="f" * 64).status_code == 400
        assert alipay.route.call_count == calls


def test_auth_base_scope_gives_no_profile(upstream_client: Callable[..., TestClient],
                                          alipay_settings: dict[str, Any], shop: ShopHandle,
                                          app_key: rsa.RSAPrivateKey,
                                          alipay_key: rsa.RSAPrivateKey) -> None:
    client = upstream_client([{**alipay_settings, "scope": "auth_base"}])
    with respx.mock as mock:
        alipay = FakeAlipay(mock, app_key, alipay_key)
        del alipay.answers["alipay.system.oauth.token"]["user_id"]  # a new app: open_id only
        sign_in = begin(client, shop, "alipay")
        tokens = consent_and_tokens(client, sign_in, sign_in.callback(auth_code="c", state=sign_in.state))
        assert alipay.route.call_count == 1
    assert set(userinfo(client, tokens)) == {"sub"}


def test_sign_content_sorts_and_skips_empty_values() -> None:
    assert sign_content({"b": "2", "a": "1", "sign": "x", "c": "", "biz_content": '{"k":"v"}'}) == \
        'a=1&b=2&biz_content={"k":"v"}'


def test_raw_member_text_is_kept_exactly() -> None:
    text = '{ "x_response" : {"nick_name":"\\u5c0f", "n": 1.50} , "sign":"abc"}'
    members = top_level_members(text)
    assert members["x_response"][0] == '{"nick_name":"\\u5c0f", "n": 1.50}'
    assert members["sign"][1] == "abc"
    with pytest.raises(ValueError):
        top_level_members('{"a":1} trailing')
