"""The compliance console: token sign-in with CSRF, audited search, charts, integrity panel."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.audit.staff import new_staff_token
from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in


@pytest.fixture
def console(shop: ShopHandle, make_client: Callable[..., TestClient]) -> tuple[TestClient, str, str]:
    auditor, auditor_digest = new_staff_token()
    admin, admin_digest = new_staff_token()
    client = make_client(staff=[{"id": "alice", "role": "auditor", "token_sha256": auditor_digest},
                                {"id": "bob", "role": "admin", "token_sha256": admin_digest}])
    final, _, verifier = sign_in(Browser(client), shop, scope="openid profile phone")
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    return client, auditor, admin


def staff_browser(client: TestClient, token: str) -> Browser:
    browser = Browser(client)
    page = browser.follow("/audit?lang=en")
    assert "Staff token" in page.text
    browser.submit(page, token=token)
    return browser


def test_console_requires_a_staff_sign_in_with_csrf(console: Any) -> None:
    client, auditor, _ = console
    browser = Browser(client)
    page = browser.follow("/audit?lang=en")
    assert "Staff token" in page.text and "Search events" not in page.text
    forged = browser.request("POST", "/audit/login", content=f"token={auditor}&csrf=forged",
                             headers={"content-type": "application/x-www-form-urlencoded"})
    assert forged.status_code == 403
    wrong = browser.submit(page, token="cgs_not-a-token")
    assert wrong.status_code == 401 and "not valid" in wrong.text


def test_console_search_results_charts_and_audited_queries(console: Any) -> None:
    client, auditor, _ = console
    browser = staff_browser(client, auditor)
    page = browser.follow("/audit?lang=en&action=userinfo_read&field=phone")
    assert page.status_code == 200
    rows = re.findall(r"<tr><td>\d+</td>", page.text)
    assert len(rows) == 1 and "userinfo_read" in page.text
    assert page.text.count("<svg") == 2 and "shop-a (1)" in page.text and "phone (1)" in page.text
    link = re.search(r'href="(/audit/api/export\?format=csv&amp;action=userinfo_read&amp;field=phone'
                     r'&amp;csrf=[^"]+)"', page.text)
    assert link
    export = browser.request("GET", html.unescape(link.group(1)))
    assert export.status_code == 200 and "userinfo_read" in export.text
    # Issue 14: the cookie alone (a link on another site) does not run an audited export.
    forged = browser.request("GET", "/audit/api/export?format=csv&action=userinfo_read")
    assert forged.status_code == 401
    again = browser.follow("/audit?lang=en&action=staff_query")
    assert "alice" in again.text


def test_console_bad_filter_is_shown_not_a_500(console: Any) -> None:
    client, auditor, _ = console
    page = staff_browser(client, auditor).follow("/audit?lang=en&since=yesterday")
    assert page.status_code == 200 and "since/until must look like" in page.text


def test_only_admins_can_verify_from_the_console(console: Any) -> None:
    client, auditor, admin = console
    auditor_page = staff_browser(client, auditor).follow("/audit?lang=en")
    assert "Verify the whole log now" not in auditor_page.text
    admin_browser = staff_browser(client, admin)
    page = admin_browser.follow("/audit?lang=en")
    reply = _verify_form(admin_browser, page)
    assert reply.status_code == 303
    done = admin_browser.follow("/audit?lang=en")
    assert "intact" in done.text and "(bob)" in done.text


def _verify_form(browser: Browser, page: Any) -> Any:
    form = re.search(r'<form method="post" action="/audit/verify">.*?</form>', page.text, re.S)
    assert form
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.group(0))
    assert csrf
    return browser.request("POST", "/audit/verify", content=f"csrf={csrf.group(1)}",
                           headers={"content-type": "application/x-www-form-urlencoded"})


def test_with_shards_the_console_names_each_events_shard_and_pages_across_them(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    auditor, digest = new_staff_token()
    client = make_client(audit_shards=3, audit_checkpoint_events=1,
                         staff=[{"id": "alice", "role": "auditor", "token_sha256": digest}])
    for person in ("li-lei", "han-meimei", "alex-morgan"):
        sign_in(Browser(client), shop, person=person, scope="openid profile phone")
    browser = staff_browser(client, auditor)
    page = browser.follow("/audit?lang=en")
    rows = re.findall(r"<tr><td>(\d)/(\d+)</td>", page.text)
    assert rows and all(0 <= int(shard) < 3 for shard, _ in rows)
    shard, index = rows[0]
    assert f'href="/audit/api/proof/{index}?shard={shard}"' in page.text
    assert "consent-gateway/audit-shards@1" in page.text  # the integrity panel: the combined note
    bad = browser.follow("/audit?lang=en&cursor=1.2")
    assert bad.status_code == 200 and "a position in each of the 3 shards" in bad.text
