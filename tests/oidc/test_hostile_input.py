"""No input gives a 500: each class found by the red-team pass of issue 14 answers 400 in the
protocol's own format."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from tests.conftest import ShopHandle, authorize_params, pkce_pair, query_of


@pytest.mark.parametrize("response_type", ['"', "中", "code\n", "code token", ""])
def test_a_malformed_response_type_is_an_error_not_a_500(client: TestClient, shop: ShopHandle,
                                                         response_type: str) -> None:
    params = authorize_params(shop, pkce_pair()[1], response_type=response_type)
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code in (302, 400), reply.text
    if reply.status_code == 302:
        assert query_of(reply.headers["location"])["error"] in ("unsupported_response_type",
                                                                 "invalid_request")


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect"])
@pytest.mark.parametrize("header", ["Basic /w==", "Basic %%%", "Basic " + "A" * 3, "Basic Zm9v"])
def test_a_malformed_basic_header_is_invalid_client(client: TestClient, path: str, header: str) -> None:
    reply = client.post(path, data={"grant_type": "authorization_code", "code": "x", "token": "x"},
                        headers={"Authorization": header})
    assert reply.status_code in (400, 401), reply.text
    assert reply.json()["error"] in ("invalid_client", "invalid_request")


def test_a_body_client_id_naming_another_shop_than_basic_is_invalid_client(
    client: TestClient, shop: ShopHandle, make_shop: object
) -> None:
    reply = client.post("/token", data={"grant_type": "authorization_code", "code": "x",
                                        "client_id": "shop-other"},
                        auth=(shop.client_id, shop.secret or ""))
    assert reply.status_code in (400, 401) and reply.json()["error"] == "invalid_client"


@pytest.mark.parametrize("extra, error", [
    ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    ({"request_uri": "https://shop.example/req.jwt"}, "request_uri_not_supported"),
    ({"response_mode": "fragment"}, "invalid_request"),
    ({"response_mode": "form_post"}, "invalid_request"),
])
def test_unsupported_authorization_parameters_are_refused_not_ignored(
    client: TestClient, shop: ShopHandle, extra: dict[str, str], error: str
) -> None:
    params = authorize_params(shop, pkce_pair()[1], **extra)
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    assert query_of(reply.headers["location"])["error"] == error


def test_junk_parameters_are_not_parked(client: TestClient, shop: ShopHandle, store: object) -> None:
    """Issue 14: an unauthenticated /authorize with junk parked ~65 KB for ten minutes."""
    params = list(authorize_params(shop, pkce_pair()[1]).items())
    params += [(f"junk{i}", "x" * 600) for i in range(90)]
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302 and reply.headers["location"].startswith("/login?request=")
    keys = list(store.redis.scan_iter(match=f"{store.keys.prefix}authreq:*"))  # type: ignore[attr-defined]
    assert len(keys) == 1
    assert store.redis.memory_usage(keys[0]) < 4096  # type: ignore[attr-defined]


def test_an_over_long_parameter_is_invalid_request(client: TestClient, shop: ShopHandle) -> None:
    params = authorize_params(shop, pkce_pair()[1], state="s" * 5000)
    reply = client.get(f"/authorize?{urlencode(params)}")
    assert reply.status_code == 302
    assert query_of(reply.headers["location"])["error"] == "invalid_request"
