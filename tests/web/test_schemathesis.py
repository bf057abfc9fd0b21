"""Schemathesis against the published description: the real app, over HTTP, on a real Redis.

For each operation of ``/openapi.json`` a gateway runs on a loopback port (``tests/live.py``,
the same harness as the interop tests) in demo mode, with one shop, one admin and one mini
program (WeChat imitated by respx), after a real sign-in and a console sign-in. Schemathesis
sends generated requests (examples, coverage and fuzzing phases) to the operation, each twice
where it takes credentials: once as generated, once with valid ones (the shop's Basic
credentials, the admin's bearer token, an access token, the person's session cookie or the
console's cookie), so the checks also reach past authentication. Every call carries the
browser-binding cookie a browser would have, and in half of the cases the values a real
client would send (a known shop, its redirect URI, the form's true CSRF token, the run's
tokens; ``STEER``) replace the generated ones, so the checks reach past the first refusal too.

Checks: no 5xx (also counted in the gateway's own metrics), responses match their schema,
status code and content type are documented, documented headers (``Retry-After``,
``Location``, …) are present. Rate limits are raised out of reach here: their 429 answers
have their own tests (tests/web/test_limits.py), and the description's 429 entries are
checked by tests/web/test_openapi.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import respx
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.config import Settings
from gateway.oidc.sessions import BROWSER_COOKIE
from gateway.store import Store
from gateway.vault.secrets import load_or_create_secret
from gateway.web.audit_api import STAFF_COOKIE, STAFF_READ
from gateway.web.csrf import csrf_token
from gateway.web.openapi import FORM, openapi_document
from tests.conftest import SHOP_REDIRECT, Browser, ShopHandle, exchange_code, query_of, sign_in
from tests.live import free_port, serve_in_thread, stop

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          content_type_conformance, response_headers_conformance]
# Fuzzed cases per operation (besides the examples and coverage phases): a minute or two in
# all. CG_SCHEMATHESIS_EXAMPLES=500 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("CG_SCHEMATHESIS_EXAMPLES", "25"))
STAFF_TOKEN = "cgs_" + secrets.token_urlsafe(32)


# A mini program for shop-a, with WeChat imitated: half of the wx.login codes are known to it.
MINI_PROGRAM = {"kind": "wechat", "product": "mini_program", "id": "shop-mp", "name": "Mini program",
                "app_id": "wx1111222233334444", "secret": {"file": "schemathesis-mp.secret"},
                "shops": ["shop-a"]}
JSCODE2SESSION = "https://api.weixin.qq.com/sns/jscode2session"
# Every bucket far above what one run spends: the fuzzer should reach the handlers, not the
# limiter (429 answers and their format have their own tests in tests/web/test_limits.py).
UNLIMITED = {"count": 1_000_000, "per_seconds": 1, "burst": 1_000_000}
LIMITS = ("authorize_per_ip", "client_failures_per_ip", "client_failures_per_client",
          "staff_failures_per_ip", "account_writes_per_person", "miniprogram_per_ip", "miniprogram_per_shop")


def wechat_session(request: httpx.Request) -> httpx.Response:
    code = request.url.params.get("js_code", "")
    if int(hashlib.sha256(code.encode()).hexdigest(), 16) % 2:
        body: dict[str, Any] = {"errcode": 40029, "errmsg": "invalid code"}
    else:
        body = {"openid": "oMp" + hashlib.sha256(code.encode()).hexdigest()[:25], "session_key": "k=="}
    return httpx.Response(200, text=json.dumps(body), headers={"content-type": "text/plain"})


@dataclass
class Live:
    """The running gateway and what a real client of it would hold."""

    origin: str
    published: set[tuple[str, str]]
    browser: str  # the browser-binding cookie every call carries, as a browser would
    cookies: dict[str, dict[str, str]]  # per cookie security scheme
    bearer: dict[str, str]  # per Authorization security scheme
    # Placeholder → real value, filled into generated values (see STEER).
    values: dict[str, str] = field(default_factory=dict)
    csrf_secret: bytes = b""

    def fill(self, case: schemathesis.Case) -> None:
        """Steer half of the cases past the first check: for each name in STEER that the
        operation takes, a good value (the run's real tokens for placeholders) replaces the
        generated one, chosen by a hash of the case so that it is repeatable. (Offering them
        through the schema does not work: ``anyOf: [{enum: [v]}, {type: string}]`` is
        simplified to the string schema by the generator.)"""
        method, path = case.operation.method.lower(), case.operation.path
        purpose = CSRF_PURPOSES.get((method.upper(), path), STAFF_READ)
        real = {**self.values, CSRF: csrf_token(self.csrf_secret, self.browser, purpose)}
        raw = case.operation.definition.raw
        where: dict[str, Any] = {}
        containers = {"query": case.query, "path": case.path_parameters}
        for parameter in raw.get("parameters", []):
            where[parameter["name"]] = containers.get(parameter["in"])
        form = raw.get("requestBody", {}).get("content", {}).get(FORM)
        for name in form["schema"]["properties"] if form else ():
            where[name] = case.body
        seed = repr((case.query, case.body, case.path_parameters))
        for name, container in where.items():
            good = STEER_AT.get((method, path, name)) or STEER.get(name)
            if good is None or not isinstance(container, dict):
                continue
            digest = hashlib.sha256(f"{name}\x00{seed}".encode()).digest()
            if digest[0] % 2:
                value = good[digest[1] % len(good)]
                container[name] = real.get(value, value)

    def credentials(self, case: schemathesis.Case) -> tuple[dict[str, str], dict[str, str]] | None:
        """Headers and cookies of the first security requirement this run can meet."""
        for requirement in case.operation.definition.raw.get("security", []):
            for scheme in requirement:
                if scheme in self.bearer:
                    return {"Authorization": self.bearer[scheme]}, {}
                if scheme in self.cookies:
                    return {}, self.cookies[scheme]
        return None


# Placeholders the generator may choose (see STEER); Live.fill swaps in the real values.
CSRF, ACCESS, REFRESH, STAFF = "<csrf>", "<access-token>", "<refresh-token>", "<staff-token>"
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(b"verifier" * 8).digest()).rstrip(b"=").decode()
# The CSRF purpose of each form (query-string csrf of the staff API: STAFF_READ).
CSRF_PURPOSES = {("POST", "/consent"): "consent", ("POST", "/demo-idp/authorize"): "demo-idp",
                 ("POST", "/account/withdraw"): "withdraw", ("POST", "/account/erase"): "erase",
                 ("POST", "/upstream/{provider_id}/link"): "link", ("POST", "/logout"): "logout",
                 ("POST", "/audit/login"): "staff-login", ("POST", "/audit/logout"): "staff-logout",
                 ("POST", "/audit/verify"): "staff-verify"}


@pytest.fixture
def live_gateway(make_settings: Callable[..., Settings], make_shop: Callable[..., ShopHandle],
                 store: Store, keys_dir: Path) -> Iterator[Live]:
    shop = make_shop()
    (keys_dir / "schemathesis-mp.secret").write_text("mp-secret", encoding="utf-8")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    digest = hashlib.sha256(STAFF_TOKEN.encode()).hexdigest()
    staff = [{"id": "admin", "role": "admin", "token_sha256": digest}]
    settings = make_settings(issuer=origin, staff=staff, providers=[MINI_PROGRAM], upstream_retries=0,
                             **{f"rate_limit_{name}": UNLIMITED for name in LIMITS})
    app = create_app(settings, store=store)
    csrf_secret = load_or_create_secret(settings.keys_dir, "csrf", app.state.gateway.sealer)
    with respx.mock(assert_all_called=False) as wechat:
        wechat.get(JSCODE2SESSION).mock(side_effect=wechat_session)
        server, thread = serve_in_thread(app, port)
        try:
            with httpx2.Client(base_url=origin, follow_redirects=False, timeout=10.0) as http:
                browser = Browser(http, origin)
                final, _, verifier = sign_in(browser, shop)
                tokens = exchange_code(http, shop, query_of(final.headers["location"])["code"],
                                       verifier).json()
                console = browser.follow("/audit")
                assert browser.submit(console, token=STAFF_TOKEN).status_code == 200
                paths = http.get("/openapi.json").json()["paths"]
            published = {(method.upper(), path) for path, item in paths.items() for method in item}
            own = browser.cookies[BROWSER_COOKIE]
            basic = base64.b64encode(f"{shop.client_id}:{shop.secret}".encode()).decode()
            yield Live(
                origin, published, own,
                cookies={"personSession": {"__Host-cg_session": browser.cookies["__Host-cg_session"]},
                         "staffCookie": {STAFF_COOKIE: browser.cookies[STAFF_COOKIE]}},
                bearer={"clientSecretBasic": f"Basic {basic}",
                        "accessToken": f"Bearer {tokens['access_token']}",
                        "staffBearer": f"Bearer {STAFF_TOKEN}"},
                values={ACCESS: tokens["access_token"], REFRESH: tokens["refresh_token"],
                        STAFF: STAFF_TOKEN},
                csrf_secret=csrf_secret)
        finally:
            stop(server, thread)
    registry = app.state.gateway.metrics.registry
    errors = [s for m in registry.collect() for s in m.samples
              if s.name.endswith("_total") and s.labels.get("status", "").startswith("5") and s.value]
    assert not errors, f"server errors during the run: {errors}"


# Values that lead past the first check (a known shop and its redirect URI, a valid scope, the
# run's tokens), put in half of the cases by Live.fill; a value per (method, path) where the
# name means something else elsewhere.
STEER: dict[str, tuple[str, ...]] = {
    "client_id": ("shop-a",), "redirect_uri": (SHOP_REDIRECT,), "scope": ("openid profile email",),
    "post_logout_redirect_uri": ("https://shop.example/",), "shop": ("shop-a",),
    "provider_id": ("demo",), "csrf": (CSRF,), "refresh_token": (REFRESH,), "grant_type": ("refresh_token",),
    "code_challenge": (CHALLENGE,), "js_code": ("wx-code-1", "wx-code-2", "wx-code-3", "wx-code-4"),
    "access_token": (ACCESS,), "code_challenge_method": ("S256",), "person": ("li-lei",),
    "response_type": ("code",), "decision": ("allow", "deny"), "confirm": ("yes",),
}
STEER_AT: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("post", "/introspect", "token"): (ACCESS, REFRESH), ("post", "/revoke", "token"): (ACCESS, REFRESH),
    ("post", "/audit/login", "token"): (STAFF,),
    ("post", "/miniprogram/{provider_id}/login", "provider_id"): ("shop-mp",),
}


schema = schemathesis.openapi.from_dict(
    openapi_document("http://127.0.0.1"),
    config=schemathesis.Config.from_dict({"generation": {"max-examples": MAX_EXAMPLES},
                                          "phases": {"stateful": {"enabled": False}}}))


@schema.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_operation_conforms_and_never_fails(case: schemathesis.Case, live_gateway: Live) -> None:
    if (case.operation.method.upper(), case.operation.path) not in live_gateway.published:
        pytest.skip("described, but not served by this app")
    live_gateway.fill(case)
    browser = {BROWSER_COOKIE: live_gateway.browser}
    case.call_and_validate(base_url=live_gateway.origin, checks=CHECKS, cookies=browser)
    credentials = live_gateway.credentials(case)
    if credentials is not None:  # and again with valid credentials, to get past authentication
        headers, cookies = credentials
        case.call_and_validate(base_url=live_gateway.origin, headers=headers, cookies={**browser, **cookies},
                               checks=CHECKS)
