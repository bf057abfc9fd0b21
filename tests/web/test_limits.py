"""Rate limits at the edge and in the routes (gateway/web/limits.py), against the real app."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.audit.staff import new_staff_token
from gateway.config import Settings
from gateway.store import Store
from gateway.web.limits import client_address
from tests.conftest import Browser, ShopHandle, authorize_params, pkce_pair, sign_in
from tests.live import free_port, serve_in_thread, stop

THREE = {"count": 1, "per_seconds": 3600, "burst": 3}  # three, then nothing for an hour


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def authorize(client: Any, shop: ShopHandle, **headers: str) -> Any:
    _, challenge = pkce_pair()
    return client.get(f"/authorize?{urlencode(authorize_params(shop, challenge))}", headers=headers)


def parked(store: Store) -> int:
    return sum(1 for _ in store.redis.scan_iter(match=f"{store.keys.prefix}authreq:*"))


def test_authorization_requests_per_ip_get_the_error_page_with_retry_after(
        shop: ShopHandle, make_client: Callable[..., TestClient], store: Store) -> None:
    client = make_client(rate_limit_authorize_per_ip=THREE)
    assert [authorize(client, shop).status_code for _ in range(3)] == [302, 302, 302]
    before = parked(store)
    refused = authorize(client, shop)
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/html")
    assert int(refused.headers["retry-after"]) > 3000
    assert "Too many attempts" in client.get("/authorize?lang=en").text
    assert parked(store) == before  # a refused request parks nothing


def test_upstream_sign_in_starts_share_the_authorization_bucket(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_authorize_per_ip=THREE)
    _, challenge = pkce_pair()
    page = Browser(client).follow(f"/authorize?{urlencode(authorize_params(shop, challenge))}")  # one
    start = re.search(r'href="(/upstream/demo/start\?[^"]+)"', page.text)
    assert start
    link = start.group(1).replace("&amp;", "&")
    assert client.get(link).status_code != 429  # two
    assert client.get(link).status_code != 429  # three
    assert client.get(link).status_code == 429


def test_failed_client_authentication_is_limited_per_client_and_address(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    assert shop.secret
    client = make_client(rate_limit_client_failures_per_client=THREE)
    data = {"token": "whatever"}
    statuses = [client.post("/introspect", data=data, headers=basic(shop.client_id, "wrong")).status_code
                for _ in range(5)]
    assert statuses[:3] == [401, 401, 401] and statuses[4] == 429
    refused = client.post("/introspect", data=data, headers=basic(shop.client_id, shop.secret))
    assert refused.status_code == 429  # the shop's bucket on this address is empty, even for a right guess
    assert refused.json()["error"] == "temporarily_unavailable" and "retry-after" in refused.headers
    # Another client_id from the same address is not blocked (its own bucket)
    assert client.post("/introspect", data=data, headers=basic("shop-b", "wrong")).status_code == 401


def test_the_form_client_id_names_the_bucket_too(
        make_shop: Callable[..., ShopHandle], make_client: Callable[..., TestClient]) -> None:
    post_shop = make_shop("shop-post", token_endpoint_auth_method="client_secret_post")
    client = make_client(rate_limit_client_failures_per_client=THREE)
    form = {"grant_type": "authorization_code", "code": "x", "client_id": post_shop.client_id,
            "client_secret": "wrong", "redirect_uri": post_shop.redirect_uri, "code_verifier": "v" * 43}
    statuses = [client.post("/token", data=form).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_a_400_invalid_client_counts_as_a_failure(shop: ShopHandle,
                                                  make_client: Callable[..., TestClient]) -> None:
    assert shop.secret
    client = make_client(rate_limit_client_failures_per_ip=THREE)
    statuses = []
    for _ in range(4):  # Basic for shop-a, a body client_id naming another shop
        reply = client.post("/token", data={"grant_type": "authorization_code", "code": "x",
                                            "client_id": "shop-b"},
                            headers=basic(shop.client_id, shop.secret))
        statuses.append(reply.status_code)
    assert statuses == [400, 400, 400, 429]


def test_good_credentials_never_spend_a_failure_bucket(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    assert shop.secret
    client = make_client(rate_limit_client_failures_per_client={"count": 1, "per_seconds": 3600, "burst": 1},
                         rate_limit_client_failures_per_ip={"count": 1, "per_seconds": 3600, "burst": 1})
    for _ in range(30):
        reply = client.post("/introspect", data={"token": "x"}, headers=basic(shop.client_id, shop.secret))
        assert reply.status_code == 200


def test_other_client_errors_are_not_authentication_failures(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    assert shop.secret
    client = make_client(rate_limit_client_failures_per_client={"count": 1, "per_seconds": 3600, "burst": 1})
    for _ in range(10):  # invalid_grant is the shop's own business, not a guess at its secret
        reply = client.post("/token", data={"grant_type": "authorization_code", "code": "nope"},
                            headers=basic(shop.client_id, shop.secret))
        assert reply.status_code == 400


def test_staff_token_guesses_are_limited_per_address(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    _, digest = new_staff_token()
    client = make_client(staff=[{"id": "alice", "role": "auditor", "token_sha256": digest}],
                         rate_limit_staff_failures_per_ip=THREE)
    headers = {"Authorization": "Bearer cgs_guess"}
    statuses = [client.get("/audit/api/events", headers=headers).status_code for _ in range(5)]
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]
    assert client.get("/audit/api/events", headers=headers).json()["error"] == "temporarily_unavailable"
    # The console sign-in shares the bucket and answers with the error page
    browser = Browser(client)
    page = browser.follow("/audit?lang=en")
    refused = browser.submit(page, token="cgs_another-guess")
    assert refused.status_code == 429 and refused.headers["content-type"].startswith("text/html")


def test_console_sign_in_failures_count(shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    _, digest = new_staff_token()
    client = make_client(staff=[{"id": "alice", "role": "auditor", "token_sha256": digest}],
                         rate_limit_staff_failures_per_ip=THREE)
    browser = Browser(client)
    statuses = []
    for _ in range(4):
        page = browser.follow("/audit?lang=en")
        statuses.append(browser.submit(page, token="cgs_guess").status_code)
    assert statuses == [401, 401, 401, 429]


def test_consent_centre_writes_are_limited_per_person(
        shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_account_writes_per_person=THREE)
    browser = Browser(client)
    sign_in(browser, shop)
    page = browser.follow("/account?lang=en")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)  # the withdrawal forms' token
    assert token
    statuses = []
    for _ in range(4):
        reply = browser.request("POST", "/account/withdraw", content=urlencode(
            {"csrf": token.group(1), "shop": shop.client_id, "confirm": "yes"}),
            headers={"content-type": "application/x-www-form-urlencoded"})
        statuses.append(reply.status_code)
    assert statuses == [303, 303, 303, 429]


def test_limits_are_off_when_switched_off(shop: ShopHandle, make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limits=False, rate_limit_authorize_per_ip=THREE)
    assert all(authorize(client, shop).status_code == 302 for _ in range(6))


def test_a_rate_setting_is_checked_at_start(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError):
        make_settings(rate_limit_authorize_per_ip={"count": 0, "per_seconds": 60, "burst": 1})


@pytest.mark.parametrize(("host", "subject"), [
    ("203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.4", "198.51.100.4"),
    ("testclient", "testclient"),
])
def test_addresses_are_counted_per_ipv4_address_and_ipv6_slash_64(host: str, subject: str) -> None:
    assert client_address({"client": (host, 1)}) == subject


# -- several workers, real HTTP ----------------------------------------------------------


@pytest.fixture
def two_workers(make_settings: Callable[..., Settings], shop: ShopHandle,
                store: Store) -> Iterator[list[str]]:
    """Two gateway apps on their own ports over one Redis: two workers, each with its memory."""
    servers = []
    origins = []
    for _ in range(2):
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        app = create_app(make_settings(
            issuer=origin, rate_limit_authorize_per_ip={"count": 1, "per_seconds": 3600, "burst": 10},
            rate_limit_client_failures_per_client={"count": 1, "per_seconds": 3600, "burst": 5}),
            store=store)
        servers.append(serve_in_thread(app, port))
        origins.append(origin)
    yield origins
    for server, thread in servers:
        stop(server, thread)


def test_a_request_limit_is_exact_across_workers(two_workers: list[str], shop: ShopHandle) -> None:
    def one(index: int) -> int:
        with httpx.Client(base_url=two_workers[index % 2], timeout=10) as http:
            return int(authorize(http, shop, **{"X-Forwarded-For": "198.51.100.20"}).status_code)

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, range(40)))
    assert statuses.count(302) == 10 and statuses.count(429) == 30


def test_failures_past_the_limit_are_bounded_by_what_is_in_flight(two_workers: list[str],
                                                                  shop: ShopHandle) -> None:
    """Eight concurrent guessers on two workers: past the burst, only what was in flight when
    the bucket emptied and one per worker are answered; everything after is 429."""
    def guess(index: int) -> int:
        with httpx.Client(base_url=two_workers[index % 2], timeout=10) as http:
            headers = {**basic(shop.client_id, secrets.token_urlsafe(8)), "X-Forwarded-For": "198.51.100.30"}
            return http.post("/revoke", data={"token": "x"}, headers=headers).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(guess, range(80)))
    assert set(statuses) <= {401, 429}
    assert 5 <= statuses.count(401) <= 5 + 8 + 2
    # and later, sequentially, every worker answers 429 at once
    assert [guess(i) for i in range(4)] == [429] * 4


def test_another_address_is_not_locked_out(two_workers: list[str], shop: ShopHandle) -> None:
    assert shop.secret
    with httpx.Client(base_url=two_workers[0], timeout=10) as http:
        for _ in range(8):
            http.post("/revoke", data={"token": "x"},
                      headers={**basic(shop.client_id, "wrong"), "X-Forwarded-For": "198.51.100.40"})
        ok = http.post("/revoke", data={"token": "x"},
                       headers={**basic(shop.client_id, shop.secret), "X-Forwarded-For": "198.51.100.41"})
    assert ok.status_code == 200
