"""The newcomer's click-through in a real browser, in both languages: shop → provider
chooser → demo sign-in → consent → shop page with minimised data → consent centre →
withdraw → the shop loses access → the compliance console shows the events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import DemoSite

TEXTS = {
    "en": {"demo": "Demo sign-in", "person": "Sign in as 李雷 Li Lei", "allow": "Allow what I ticked",
           "withdraw_all": "Withdraw everything from this shop", "confirm": "Yes, do it",
           "consent_heading": "wants to know about you", "staff_token": "Staff token",
           "staff_sign_in": "Sign in"},
    "zh-CN": {"demo": "演示登录", "person": "登录为 李雷 Li Lei", "allow": "同意所勾选的内容",
              "withdraw_all": "撤回对该商店的全部授权", "confirm": "确认",
              "consent_heading": "请求获取您的信息", "staff_token": "员工令牌", "staff_sign_in": "登录"},
}


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_click_through(demo_site: DemoSite, chromium: Any,
                       screenshot: Callable[[Any, str, str], None], language: str) -> None:
    text = TEXTS[language]
    context = chromium.new_context(locale=language, viewport={"width": 390, "height": 844},
                                   extra_http_headers={"Accept-Language": language})
    page = context.new_page()
    try:
        page.goto(f"{demo_site.shop}/")
        screenshot(page, language, "01-shop")
        page.get_by_role("link", name="Sign in with Consent Gateway").click()
        page.wait_for_url(f"{demo_site.gateway}/login*")
        screenshot(page, language, "02-provider-chooser")
        page.get_by_role("link", name=text["demo"]).click()
        screenshot(page, language, "03-demo-sign-in")
        page.get_by_role("button", name=text["person"]).click()
        page.wait_for_url(f"{demo_site.gateway}/consent*")
        assert text["consent_heading"] in page.content()
        assert page.locator("input[type=checkbox]:checked").count() == 0  # nothing pre-ticked
        screenshot(page, language, "04-consent")
        for box in page.locator("input[type=checkbox]").all():
            box.check()
        page.get_by_role("button", name=text["allow"]).click()
        page.wait_for_url(f"{demo_site.shop}/")
        body = page.content()
        assert "138****5678" in body and "age_over_18" in body and "李*" in body
        assert "13812345678" not in body and "lilei@example.com" not in body
        screenshot(page, language, "05-shop-with-minimised-data")

        page.goto(f"{demo_site.gateway}/account")
        assert "Demo Shop" in page.content() or "演示商店" in page.content()
        screenshot(page, language, "06-consent-centre")
        page.get_by_role("button", name=text["withdraw_all"]).click()
        screenshot(page, language, "07-withdraw-confirm")
        page.get_by_role("button", name=text["confirm"]).click()
        page.wait_for_url(f"{demo_site.gateway}/account")

        page.goto(f"{demo_site.shop}/refresh")
        assert "The gateway refused: HTTP 401" in page.content()
        screenshot(page, language, "08-shop-lost-access")

        page.goto(f"{demo_site.gateway}/account")
        assert page.locator("text=/Demo Shop|演示商店/").count() >= 1  # in the access history
        screenshot(page, language, "09-access-history")

        page.set_viewport_size({"width": 1280, "height": 900})  # staff work at a desk
        page.goto(f"{demo_site.gateway}/audit")
        page.get_by_label(text["staff_token"]).fill(demo_site.staff_token)
        page.get_by_role("button", name=text["staff_sign_in"]).click()
        page.goto(f"{demo_site.gateway}/audit?shop=demo-shop")
        table = page.locator("table").inner_text()
        for action in ("consent_granted", "code_issued", "token_issued", "userinfo_read",
                       "consent_withdrawn", "token_revoked"):
            assert action in table, action
        assert page.locator("svg").count() == 2
        screenshot(page, language, "10-compliance-console")
    finally:
        context.close()
