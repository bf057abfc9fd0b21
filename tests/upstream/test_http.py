"""The providers' HTTP client: retries only where safe, bounded bodies, no secrets in logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from gateway.upstream import UpstreamError
from gateway.upstream.http import MAX_BODY_BYTES, UpstreamHttp
from tests.conftest import ShopHandle
from tests.upstream.conftest import begin, consent_and_tokens

URL = "https://provider.example/api"


def call(http: UpstreamHttp, method: str, url: str, **kwargs: Any) -> Any:
    """One call on a loop of its own (the client is async), its connections closed after."""
    async def run() -> Any:
        try:
            return await http.request(method, url, **kwargs)
        finally:
            await http.aclose()

    return asyncio.run(run())


def test_reads_are_retried_after_5xx_and_timeouts() -> None:
    http = UpstreamHttp(timeout=5, retries=2, deadline=5)
    with respx.mock as mock:
        route = mock.get(URL).mock(side_effect=[httpx.ReadTimeout("slow"), httpx.Response(502),
                                                httpx.Response(200, json={"ok": True})])
        assert call(http, "GET", URL, what="read", idempotent=True).json() == {"ok": True}
        assert route.call_count == 3


def test_code_exchanges_are_never_sent_twice() -> None:
    http = UpstreamHttp(timeout=5, retries=3, deadline=5)
    with respx.mock as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(503))
        with pytest.raises(UpstreamError) as caught:
            call(http, "POST", URL, what="token", idempotent=False, data={"code": "c"})
        assert route.call_count == 1
    assert caught.value.retryable


def test_oversized_body_is_refused() -> None:
    http = UpstreamHttp(timeout=5, retries=0, deadline=5)
    with respx.mock as mock:
        mock.get(URL).mock(return_value=httpx.Response(200, content=b"x" * (MAX_BODY_BYTES + 1)))
        with pytest.raises(UpstreamError, match="too large"):
            call(http, "GET", URL, what="read", idempotent=True)


def test_redirect_from_an_api_is_not_followed() -> None:
    http = UpstreamHttp(timeout=5, retries=0, deadline=5)
    with respx.mock as mock:
        mock.get(URL).mock(return_value=httpx.Response(302, headers={"location": "https://evil.example"}))
        with pytest.raises(UpstreamError, match="redirect") as caught:
            call(http, "GET", URL, what="read", idempotent=True)
    assert not caught.value.retryable


def test_no_secret_code_or_identifier_reaches_the_log(
    upstream_client: Callable[..., TestClient], write_secret: Callable[..., dict[str, str]],
    shop: ShopHandle, caplog: pytest.LogCaptureFixture,
) -> None:
    client = upstream_client([{"kind": "wechat", "product": "website", "id": "wechat-web",
                               "name": "WeChat", "app_id": "wx0123456789abcdef",
                               "secret": write_secret("wx-log.secret", "wx-very-secret-value")}])
    body: dict[str, Any] = {"access_token": "ACCESS-TOKEN-VALUE", "openid": "oOPENID-VALUE",
                            "unionid": "oUNIONID-VALUE", "scope": "snsapi_login"}
    caplog.set_level(logging.DEBUG)
    with respx.mock as mock:
        mock.get("https://api.weixin.qq.com/sns/oauth2/access_token").mock(
            return_value=httpx.Response(200, json=body))
        mock.get("https://api.weixin.qq.com/sns/userinfo").mock(return_value=httpx.Response(
            200, json={"openid": "oOPENID-VALUE", "nickname": "NICK-VALUE", "unionid": "oUNIONID-VALUE"}))
        sign_in = begin(client, shop, "wechat-web")
        consent_and_tokens(client, sign_in, sign_in.callback(code="CODE-VALUE", state=sign_in.state))
        mock.get("https://api.weixin.qq.com/sns/oauth2/access_token").mock(
            return_value=httpx.Response(200, json={"errcode": 40029, "errmsg": "invalid code rid: RID-1"}))
        failed = begin(client, shop, "wechat-web")
        failed.callback(code="CODE-VALUE-2", state=failed.state)
    # The test client's own log (httpx2) shows the URLs the test requested: not the gateway's.
    records = [r for r in caplog.records if not r.name.startswith("httpx2")]
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    for value in ("wx-very-secret-value", "CODE-VALUE", "ACCESS-TOKEN-VALUE", "oOPENID-VALUE",
                  "oUNIONID-VALUE", "NICK-VALUE", "RID-1"):
        assert value not in logged, value
    assert "errcode 40029" in logged
