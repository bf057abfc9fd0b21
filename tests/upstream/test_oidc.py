"""The generic OpenID Connect connector against a provider imitated with respx.

The imitation signs real ID tokens with its own keys; each test changes one thing about
what it answers (a claim, the key, the signature, the callback) and checks the gateway's
verdict: the person's page, and what the shop is told.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from starlette.testclient import TestClient

from tests.conftest import ShopHandle
from tests.upstream.conftest import SignIn, begin, consent_and_tokens, released, shop_error, userinfo

ISSUER = "https://id.example.com"
CLIENT_ID = "gateway-at-idp"


class FakeProvider:
    """Discovery, JWKS, token and userinfo endpoints of an OpenID provider."""

    def __init__(self, mock: respx.MockRouter, **metadata: Any) -> None:
        self.key: RSAKey | ECKey = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        self.published: list[RSAKey | ECKey] = [self.key]
        self.codes: dict[str, str] = {}  # code -> nonce of the sign-in it was issued to
        self.claims: dict[str, Any] = {}  # changes to the ID token's claims
        self.header: dict[str, Any] = {}  # changes to its header
        self.tamper: Callable[[str], str] = lambda token: token
        self.sub = "248289761001"
        self.profile: dict[str, Any] = {
            "sub": self.sub, "name": "Jane Doe", "nickname": "jane", "email": "jane@example.org",
            "email_verified": True, "picture": "https://id.example.com/jane.png",
            "birthdate": "1994-10-31", "gender": "female", "phone_number": "+8613812345678",
            "phone_number_verified": False,
            "address": {"country": "CN", "region": "Guangdong", "locality": "Shenzhen"},
            "employee_number": "E-1234",
        }
        self.metadata = {
            "issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize",
            "token_endpoint": f"{ISSUER}/token", "userinfo_endpoint": f"{ISSUER}/userinfo",
            "jwks_uri": f"{ISSUER}/jwks", "authorization_response_iss_parameter_supported": True,
            **metadata,
        }
        self.discovery = mock.get(f"{ISSUER}/.well-known/openid-configuration").mock(
            side_effect=lambda request: httpx.Response(200, json=self.metadata))
        self.jwks = mock.get(f"{ISSUER}/jwks").mock(side_effect=lambda request: httpx.Response(
            200, json={"keys": [k.as_dict(private=False) for k in self.published]}))
        self.token = mock.post(f"{ISSUER}/token").mock(side_effect=self._token)
        self.userinfo = mock.get(f"{ISSUER}/userinfo").mock(
            side_effect=lambda request: httpx.Response(200, json=self.profile))

    def authorize(self, sign_in: SignIn, **extra: str) -> dict[str, str]:
        """The person signs in upstream: a code for the nonce the gateway sent."""
        code = secrets.token_urlsafe(16)
        self.codes[code] = sign_in.upstream_query["nonce"]
        return {"code": code, "state": sign_in.state, "iss": ISSUER, **extra}

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        nonce = self.codes.pop(form.get("code", ""), None)
        if nonce is None:
            return httpx.Response(400, json={"error": "invalid_grant"})
        access_token = secrets.token_urlsafe(24)
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": self.sub, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "nonce": nonce, "at_hash": _half_hash(access_token), "amr": ["pwd", "mfa"],
                  **self.claims}
        alg = "ES256" if isinstance(self.key, ECKey) else "RS256"
        header = {"alg": alg, "kid": self.key.kid, **self.header}
        id_token = self.tamper(jwt.encode(header, {k: v for k, v in claims.items() if v is not None},
                                          self.key))
        return httpx.Response(200, json={"access_token": access_token, "token_type": "Bearer",
                                         "expires_in": 300, "id_token": id_token})


def _half_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture
def oidc_settings(write_secret: Callable[..., dict[str, str]]) -> dict[str, Any]:
    return {"kind": "oidc", "id": "corp", "name": "Corp ID", "name_zh": "企业账号", "issuer": ISSUER,
            "client_id": CLIENT_ID, "client_secret": write_secret("corp.secret", "corp-secret"),
            "scopes": ["openid", "profile", "email", "phone", "address"]}


@pytest.fixture
def gateway(upstream_client: Callable[..., TestClient], oidc_settings: dict[str, Any],
            shop: ShopHandle) -> TestClient:
    return upstream_client([oidc_settings])


def test_sign_in_validates_the_id_token_and_maps_the_profile(gateway: TestClient,
                                                             shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        sign_in = begin(gateway, shop, "corp")
        query = sign_in.upstream_query
        assert sign_in.location.startswith(f"{ISSUER}/authorize?")
        assert query["client_id"] == CLIENT_ID and query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256" and query["nonce"]
        assert query["scope"] == "openid profile email phone address"
        page = sign_in.callback(**idp.authorize(sign_in))
        sent = parse_qs(idp.token.calls.last.request.content.decode())
        verifier = sent["code_verifier"][0]
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        assert challenge.decode() == query["code_challenge"]  # PKCE really bound the code
        assert idp.token.calls.last.request.headers["authorization"].startswith("Basic ")
        tokens = consent_and_tokens(gateway, sign_in, page)
    claims = userinfo(gateway, tokens)
    assert claims["nickname"] == "jane" and claims["email"] == "jane@example.org"
    assert claims["picture"] == "https://id.example.com/jane.png"
    assert "age_band" in claims and "birthdate" not in claims  # the policy's transform
    assert "phone_number" not in claims  # the provider said the number is not verified
    assert released(claims) <= {"nickname", "picture", "email", "age_band", "phone_number"}
    assert idp.sub not in json.dumps(claims) and "E-1234" not in json.dumps(claims)


def test_same_person_signing_in_twice_is_one_person(gateway: TestClient, shop: ShopHandle) -> None:
    subjects = []
    with respx.mock as mock:
        idp = FakeProvider(mock)
        for _ in range(2):
            sign_in = begin(gateway, shop, "corp")
            tokens = consent_and_tokens(gateway, sign_in, sign_in.callback(**idp.authorize(sign_in)))
            subjects.append(userinfo(gateway, tokens)["sub"])
        assert idp.discovery.call_count == 1 and idp.jwks.call_count == 1  # both cached
    assert subjects[0] == subjects[1]


def test_key_roll_over_fetches_the_jwks_again(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        first = begin(gateway, shop, "corp")
        consent_and_tokens(gateway, first, first.callback(**idp.authorize(first)))
        idp.key = ECKey.generate_key("P-256", parameters={"kid": "k2", "use": "sig"})
        idp.published = [idp.key]  # the provider rolled its key
        second = begin(gateway, shop, "corp")
        page = second.callback(**idp.authorize(second))
        assert page.status_code in (200, 302), page.text
        assert idp.jwks.call_count == 2


@pytest.mark.parametrize(("change", "reason"), [
    ({"iss": "https://evil.example.com"}, "wrong issuer"),
    ({"aud": "someone-else"}, "wrong audience"),
    ({"aud": [CLIENT_ID, "other"], "azp": "other"}, "azp of another client"),
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"iat": int(time.time()) + 3600}, "issued in the future"),
    ({"nonce": "another-sign-in"}, "nonce of another sign-in"),
    ({"nonce": None}, "no nonce"),
    ({"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "at_hash of another access token"),
])
def test_id_token_with_a_bad_claim_is_refused(gateway: TestClient, shop: ShopHandle,
                                              change: dict[str, Any], reason: str) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.claims = change
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert page.status_code == 400, reason
    assert shop_error(page) == "access_denied", reason


def test_tampered_id_token_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    def swap_payload(token: str) -> str:
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["sub"] = "someone-else"
        return f"{header}.{_b64(claims)}.{signature}"

    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.tamper = swap_payload
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert shop_error(page) == "access_denied"


def test_unsigned_id_token_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    def strip_signature(token: str) -> str:
        _, payload, _ = token.split(".")
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."

    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.tamper = strip_signature
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert shop_error(page) == "access_denied"


def test_id_token_signed_with_a_shared_secret_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    def hs256(token: str) -> str:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        return jwt.encode({"alg": "HS256", "kid": "k1"}, claims, OctKey.import_key(b"corp-secret" * 3),
                          algorithms=["HS256"])

    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.tamper = hs256
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert shop_error(page) == "access_denied"


def test_id_token_signed_by_a_key_the_provider_does_not_publish_is_refused(
    gateway: TestClient, shop: ShopHandle,
) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})  # same kid, other key
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert shop_error(page) == "access_denied"


def test_callback_from_another_issuer_is_refused_rfc9207(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in, iss="https://attacker.example"))
        assert not idp.token.called  # the code never goes to the token endpoint
    assert shop_error(page) == "access_denied"


def test_callback_without_iss_is_refused_when_the_provider_promises_it(gateway: TestClient,
                                                                      shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        sign_in = begin(gateway, shop, "corp")
        query = idp.authorize(sign_in)
        del query["iss"]
        page = sign_in.callback(**query)
        assert not idp.token.called
    assert shop_error(page) == "access_denied"


def test_callback_without_iss_is_accepted_when_the_provider_does_not_send_it(
    gateway: TestClient, shop: ShopHandle,
) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock, authorization_response_iss_parameter_supported=False)
        sign_in = begin(gateway, shop, "corp")
        query = idp.authorize(sign_in)
        del query["iss"]
        consent_and_tokens(gateway, sign_in, sign_in.callback(**query))


def test_discovery_naming_another_issuer_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        FakeProvider(mock, issuer="https://id.example.com/other")
        page = _start_page(gateway, shop)
    assert shop_error(page) == "access_denied"


def test_discovery_unreachable_is_temporarily_unavailable(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        mock.get(f"{ISSUER}/.well-known/openid-configuration").mock(
            side_effect=httpx.ConnectError("refused"))
        page = _start_page(gateway, shop)
    assert page.status_code == 502
    assert shop_error(page) == "temporarily_unavailable"


def _start_page(client: TestClient, shop: ShopHandle) -> Any:
    from tests.conftest import Browser, authorize_params, pkce_pair

    browser = Browser(client)  # type: ignore[arg-type]
    _, challenge = pkce_pair()
    page = browser.follow(f"/authorize?{httpx.QueryParams(authorize_params(shop, challenge))}")
    start = re.search(r'href="(/upstream/corp/start\?[^"]+)"', page.text)
    assert start, page.text
    return browser.follow(start.group(1).replace("&amp;", "&"))


def test_code_replayed_at_the_provider_is_access_denied(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        first = begin(gateway, shop, "corp")
        query = idp.authorize(first)
        consent_and_tokens(gateway, first, first.callback(**query))
        second = begin(gateway, shop, "corp")  # a new sign-in presenting the used code
        page = second.callback(code=query["code"], state=second.state, iss=ISSUER)
    assert shop_error(page) == "access_denied"


def test_wrong_state_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in, state=secrets.token_hex(32)))
        assert not idp.token.called
    assert page.status_code == 400 and shop_error(page) is None


def test_state_from_another_browser_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    from tests.conftest import Browser

    with respx.mock as mock:
        idp = FakeProvider(mock)
        sign_in = begin(gateway, shop, "corp")
        other = Browser(gateway)  # type: ignore[arg-type]
        page = other.follow(f"/upstream/corp/callback?{httpx.QueryParams(idp.authorize(sign_in))}")
        assert not idp.token.called
    assert page.status_code == 400


def test_token_endpoint_timeout_is_temporarily_unavailable(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.token.mock(side_effect=httpx.ReadTimeout("slow"))
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert page.status_code == 502 and shop_error(page) == "temporarily_unavailable"


def test_token_endpoint_non_json_body_is_temporarily_unavailable(gateway: TestClient,
                                                                shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.token.mock(return_value=httpx.Response(200, text="<html>maintenance</html>"))
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert shop_error(page) == "temporarily_unavailable"


def test_token_endpoint_5xx_is_temporarily_unavailable(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.token.mock(return_value=httpx.Response(500, json={"error": "server_error"}))
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert shop_error(page) == "temporarily_unavailable"


def test_userinfo_about_someone_else_is_refused(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        idp = FakeProvider(mock)
        idp.profile = {**idp.profile, "sub": "another-person"}
        sign_in = begin(gateway, shop, "corp")
        page = sign_in.callback(**idp.authorize(sign_in))
    assert shop_error(page) == "access_denied"


def test_provider_error_in_the_callback_is_passed_on(gateway: TestClient, shop: ShopHandle) -> None:
    with respx.mock as mock:
        FakeProvider(mock)
        sign_in = begin(gateway, shop, "corp")
        declined = sign_in.callback(error="access_denied", state=sign_in.state, iss=ISSUER)
        assert shop_error(declined) == "access_denied"
        busy = begin(gateway, shop, "corp")
        page = busy.callback(error="temporarily_unavailable", state=busy.state, iss=ISSUER)
    assert shop_error(page) == "temporarily_unavailable"


def test_reads_are_retried_after_a_5xx_when_retries_are_set(
    upstream_client: Callable[..., TestClient], oidc_settings: dict[str, Any], shop: ShopHandle,
) -> None:
    client = upstream_client([oidc_settings], upstream_retries=2)
    with respx.mock as mock:
        idp = FakeProvider(mock)
        answers = iter([httpx.Response(502), httpx.Response(503)])
        idp.discovery.mock(side_effect=lambda request: next(answers, None) or httpx.Response(
            200, json=idp.metadata))
        sign_in = begin(client, shop, "corp")
        consent_and_tokens(client, sign_in, sign_in.callback(**idp.authorize(sign_in)))
        assert idp.discovery.call_count == 3
        assert idp.token.call_count == 1  # a code exchange is never repeated
