"""GitHub (the OAuth 2.0 preset) and a generic OAuth 2.0 provider, imitated with respx."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from starlette.testclient import TestClient

from tests.conftest import ShopHandle
from tests.upstream.conftest import begin, consent_and_tokens, released, shop_error, userinfo

TOKEN_URL = "https://github.com/login/oauth/access_token"
USER_URL = "https://api.github.com/user"
EMAILS_URL = "https://api.github.com/user/emails"
GITHUB_USER = {"id": 583231, "login": "octocat", "name": "The Octocat", "email": None,
               "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
               "location": "San Francisco", "company": "@github", "node_id": "MDQ6VXNlcjU4MzIzMQ=="}


@pytest.fixture
def github(upstream_client: Callable[..., TestClient], write_secret: Callable[..., dict[str, str]],
           shop: ShopHandle) -> TestClient:
    return upstream_client([{
        "kind": "oauth2", "preset": "github", "id": "github", "name": "GitHub",
        "client_id": "Iv1.gateway", "client_secret": write_secret("github.secret", "gh-secret"),
    }])


def token_json(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"access_token": "gho_token", "token_type": "bearer",
                                     "scope": "read:user,user:email"})


def mock_github(mock: respx.MockRouter, token: Any = token_json, user: Any = None) -> None:
    mock.post(TOKEN_URL).mock(side_effect=token)
    mock.get(USER_URL).mock(return_value=user or httpx.Response(200, json=GITHUB_USER))
    mock.get(EMAILS_URL).mock(return_value=httpx.Response(200, json=[
        {"email": "old@example.com", "primary": False, "verified": True},
        {"email": "octocat@example.com", "primary": True, "verified": True},
    ]))


def test_github_sign_in_releases_only_catalogue_fields(github: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock_github(mock)
        sign_in = begin(github, shop, "github")
        query = sign_in.upstream_query
        assert sign_in.location.startswith("https://github.com/login/oauth/authorize?")
        assert query["client_id"] == "Iv1.gateway" and query["scope"] == "read:user user:email"
        assert query["code_challenge_method"] == "S256"
        page = sign_in.callback(code="gh-code", state=sign_in.state)
        sent = parse_qs(mock.routes[0].calls.last.request.content.decode())
        assert sent["client_secret"] == ["gh-secret"] and sent["code"] == ["gh-code"]
        assert "code_verifier" in sent
        tokens = consent_and_tokens(github, sign_in, page)
    claims = userinfo(github, tokens)
    assert claims["nickname"] == "The Octocat"
    assert claims["email"] == "octocat@example.com"  # the primary verified one
    assert claims["picture"] == GITHUB_USER["avatar_url"]
    assert released(claims) <= {"nickname", "picture", "email"}
    assert "583231" not in claims["sub"] and "octocat" not in claims["sub"]
    assert "node_id" not in str(claims) and "San Francisco" not in str(claims)


def test_github_form_encoded_token_response_is_understood(github: TestClient, shop: ShopHandle) -> None:
    def form_token(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="access_token=gho_form&scope=read%3Auser&token_type=bearer",
                              headers={"content-type": "application/x-www-form-urlencoded"})

    with respx.mock as mock:
        mock_github(mock, token=form_token)
        sign_in = begin(github, shop, "github")
        page = sign_in.callback(code="gh-code", state=sign_in.state)
        consent_and_tokens(github, sign_in, page)
        assert mock.routes[1].calls.last.request.headers["authorization"] == "Bearer gho_form"


@pytest.mark.parametrize(("error", "shop_sees"), [
    ("bad_verification_code", "access_denied"),
    ("incorrect_client_credentials", "temporarily_unavailable"),
    ("redirect_uri_mismatch", "temporarily_unavailable"),
])
def test_github_error_in_a_200_body(github: TestClient, shop: ShopHandle, error: str, shop_sees: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"error": error, "error_description": "nope"})

    with respx.mock as mock:
        mock_github(mock, token=refuse)
        sign_in = begin(github, shop, "github")
        page = sign_in.callback(code="gh-code", state=sign_in.state)
    assert page.status_code in (400, 502)
    assert shop_error(page) == shop_sees


def test_github_code_already_redeemed_is_access_denied(github: TestClient, shop: ShopHandle) -> None:
    used: set[str] = set()

    def once(request: httpx.Request) -> httpx.Response:
        code = parse_qs(request.content.decode())["code"][0]
        if code in used:
            return httpx.Response(200, json={"error": "bad_verification_code"})
        used.add(code)
        return token_json(request)

    with respx.mock as mock:
        mock_github(mock, token=once)
        first = begin(github, shop, "github")
        consent_and_tokens(github, first, first.callback(code="same-code", state=first.state))
        second = begin(github, shop, "github")
        page = second.callback(code="same-code", state=second.state)
    assert shop_error(page) == "access_denied"


def test_github_token_timeout_is_temporarily_unavailable(github: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock_github(mock, token=httpx.ReadTimeout("slow"))
        sign_in = begin(github, shop, "github")
        page = sign_in.callback(code="gh-code", state=sign_in.state)
    assert page.status_code == 502
    assert shop_error(page) == "temporarily_unavailable"
    assert "try again" in page.text.lower() or "稍后" in page.text


def test_github_profile_that_is_not_json_is_temporarily_unavailable(github: TestClient,
                                                                   shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock_github(mock, user=httpx.Response(200, text="<html>unicorn</html>",
                                              headers={"content-type": "text/html"}))
        sign_in = begin(github, shop, "github")
        page = sign_in.callback(code="gh-code", state=sign_in.state)
    assert shop_error(page) == "temporarily_unavailable"


def test_github_profile_refused_is_access_denied(github: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock_github(mock, user=httpx.Response(401, json={"message": "Bad credentials"}))
        sign_in = begin(github, shop, "github")
        page = sign_in.callback(code="gh-code", state=sign_in.state)
    assert shop_error(page) == "access_denied"


def test_github_5xx_is_temporarily_unavailable(github: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock_github(mock, user=httpx.Response(503, text="busy"))
        sign_in = begin(github, shop, "github")
        page = sign_in.callback(code="gh-code", state=sign_in.state)
    assert shop_error(page) == "temporarily_unavailable"


def test_wrong_state_is_refused_and_nothing_is_exchanged(github: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock_github(mock)
        sign_in = begin(github, shop, "github")
        page = sign_in.callback(code="gh-code", state="0" * 64)
        assert not mock.routes[0].called
    assert page.status_code == 400
    assert shop_error(page) is None  # an unknown state names no shop request to answer


def test_replayed_callback_is_refused(github: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock_github(mock)
        sign_in = begin(github, shop, "github")
        consent_and_tokens(github, sign_in, sign_in.callback(code="gh-code", state=sign_in.state))
        replay = sign_in.callback(code="gh-code", state=sign_in.state)
        assert mock.routes[0].call_count == 1
    assert replay.status_code == 400


def test_person_who_declines_at_github_is_access_denied(github: TestClient, shop: ShopHandle) -> None:
    sign_in = begin(github, shop, "github")
    page = sign_in.callback(error="access_denied", state=sign_in.state,
                            error_description="The user has denied your application access.")
    assert shop_error(page) == "access_denied"


def test_generic_oauth2_provider_with_declared_mapping(
    upstream_client: Callable[..., TestClient], write_secret: Callable[..., dict[str, str]],
    shop: ShopHandle,
) -> None:
    client = upstream_client([{
        "kind": "oauth2", "id": "forum", "name": "Forum", "name_zh": "论坛",
        "authorize_url": "https://forum.example/oauth/authorize",
        "token_url": "https://forum.example/oauth/token",
        "profile_url": "https://forum.example/api/me",
        "client_id": "gw", "client_secret": write_secret("forum.secret", "forum-secret"),
        "token_endpoint_auth_method": "client_secret_basic", "scopes": ["profile", "mail"],
        "subject_field": "data.uid",
        "fields": {"nickname": ["data.display"], "email": ["data.mail"], "birthdate": ["data.born"]},
    }])
    with respx.mock as mock:
        token = mock.post("https://forum.example/oauth/token").mock(return_value=httpx.Response(
            200, json={"access_token": "t", "token_type": "Bearer", "expires_in": "3600"}))
        mock.get("https://forum.example/api/me").mock(return_value=httpx.Response(200, json={
            "data": {"uid": "u-77", "display": "老王", "mail": "wang@example.com", "born": "1990-01-02",
                     "ssn": "123-45-6789"}}))
        sign_in = begin(client, shop, "forum")
        page = sign_in.callback(code="c", state=sign_in.state)
        tokens = consent_and_tokens(client, sign_in, page)
        assert token.calls.last.request.headers["authorization"].startswith("Basic ")
    claims = userinfo(client, tokens)
    assert claims["nickname"] == "老王" and claims["email"] == "wang@example.com"
    assert "age_band" in claims  # birthdate, generalised by the shop's policy
    assert "123-45-6789" not in str(claims)


def test_generic_oauth2_profile_without_the_subject_field_is_refused(
    upstream_client: Callable[..., TestClient], write_secret: Callable[..., dict[str, str]],
    shop: ShopHandle,
) -> None:
    client = upstream_client([{
        "kind": "oauth2", "id": "forum", "name": "Forum",
        "authorize_url": "https://forum.example/oauth/authorize",
        "token_url": "https://forum.example/oauth/token", "profile_url": "https://forum.example/api/me",
        "client_id": "gw", "client_secret": write_secret("forum.secret", "forum-secret"),
    }])
    with respx.mock as mock:
        mock.post("https://forum.example/oauth/token").mock(
            return_value=httpx.Response(200, json={"access_token": "t", "token_type": "bearer"}))
        mock.get("https://forum.example/api/me").mock(return_value=httpx.Response(200, json={"id": None}))
        sign_in = begin(client, shop, "forum")
        page = sign_in.callback(code="c", state=sign_in.state)
    assert shop_error(page) == "access_denied"
