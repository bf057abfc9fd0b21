"""The built-in demo provider: a simulated third-party login with fictional people.

It behaves like a real provider seen from the gateway: the browser is sent to its sign-in
page with state, nonce and a PKCE challenge, comes back with a single-use code, and the
code is exchanged for an identity. It exists only in demo mode; the application refuses to
mount it otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from anyio import to_thread

from gateway.store import Store
from gateway.upstream.base import UpstreamError, UpstreamIdentity, code_parameter, origin_of

DEMO_PROVIDER_ID = "demo"
DEMO_CODE_TTL = 60


@dataclass(frozen=True, slots=True)
class DemoPerson:
    key: str
    display_name: str
    profile: dict[str, Any]


DEMO_PEOPLE: tuple[DemoPerson, ...] = (
    DemoPerson(
        "li-lei",
        "李雷 Li Lei",
        {
            "nickname": "李雷",
            "avatar": "https://demo.invalid/avatars/li-lei.png",
            "gender": "male",
            "region": "CN-GD",
            "city": "深圳",
            "phone": "13812345678",
            "email": "lilei@example.com",
            "birthdate": "1990-04-12",
            "real_name": "李雷",
            "id_number": "11010519900412001X",
            "address": {"country": "CN", "region": "CN-GD", "locality": "深圳",
                        "street_address": "南山区科技园 1 号"},
            "precise_location": {"latitude": 22.5431, "longitude": 114.0579, "locality": "深圳"},
        },
    ),
    DemoPerson(
        "han-meimei",
        "韩梅梅 Han Meimei",
        {
            "nickname": "梅梅",
            "avatar": "https://demo.invalid/avatars/han-meimei.png",
            "gender": "female",
            "region": "CN-SH",
            "city": "上海",
            "phone": "13987654321",
            "email": "meimei@example.com",
            "birthdate": "2008-09-01",
            "real_name": "韩梅梅",
            "address": {"country": "CN", "region": "CN-SH", "locality": "上海",
                        "street_address": "浦东新区世纪大道 100 号"},
        },
    ),
    DemoPerson(
        "alex-morgan",
        "Alex Morgan",
        {
            "nickname": "alex",
            "avatar": "https://demo.invalid/avatars/alex.png",
            "region": "GB",
            "city": "London",
            "email": "alex@example.org",
            "birthdate": "1985-12-30",
        },
    ),
)


def find_demo_person(key: str) -> DemoPerson | None:
    return next((p for p in DEMO_PEOPLE if p.key == key), None)


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _code_key(store: Store, code: str) -> str:
    return store.keys.demo_upstream_code(hashlib.sha256(code.encode()).hexdigest())


class DemoProvider:
    """The provider side: its sign-in page issues codes, which the connector redeems."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def issue_code(self, person: DemoPerson, *, redirect_uri: str, code_challenge: str,
                   nonce: str) -> str:
        code = secrets.token_urlsafe(32)
        record = {"person": person.key, "redirect_uri": redirect_uri,
                  "code_challenge": code_challenge, "nonce": nonce}
        self._store.redis.set(_code_key(self._store, code), json.dumps(record), ex=DEMO_CODE_TTL)
        return code


class DemoConnector:
    """The gateway's client of the demo provider."""

    provider_id = DEMO_PROVIDER_ID
    display_name = "Demo sign-in"
    logo = "demo"

    def __init__(self, store: Store, authorize_endpoint: str) -> None:
        self._store = store
        self._authorize_endpoint = authorize_endpoint

    async def authorization_origin(self) -> str:
        return origin_of(self._authorize_endpoint)

    async def authorization_url(self, *, state: str, nonce: str, code_challenge: str,
                                redirect_uri: str) -> str:
        query = urlencode({
            "response_type": "code", "client_id": "consent-gateway", "redirect_uri": redirect_uri,
            "state": state, "nonce": nonce, "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        })
        return f"{self._authorize_endpoint}?{query}"

    def name_in(self, language: str) -> str:
        return "演示登录" if language == "zh-CN" else self.display_name

    def offered_to(self, user_agent: str) -> bool:
        return True

    def available(self) -> bool:
        return True

    async def callback_code(self, params: Mapping[str, str]) -> str:
        return code_parameter(params)

    async def fetch_identity(self, *, code: str, code_verifier: str, redirect_uri: str,
                             nonce: str) -> UpstreamIdentity:
        # GETDEL: single use without a tombstone, so nothing of the demo person stays behind.
        # The synchronous Redis client runs in the worker pool, one short hop.
        raw = await to_thread.run_sync(self._store.redis.getdel, _code_key(self._store, code))
        if not isinstance(raw, bytes):
            raise UpstreamError("demo code unknown, expired or replayed")
        record = json.loads(raw)
        if record["redirect_uri"] != redirect_uri:
            raise UpstreamError("demo code redirect_uri mismatch")
        if not hmac.compare_digest(record["code_challenge"], _s256(code_verifier)):
            raise UpstreamError("demo code PKCE verification failed")
        if not hmac.compare_digest(record["nonce"], nonce):
            raise UpstreamError("demo code nonce mismatch")
        person = find_demo_person(record["person"])
        if person is None:
            raise UpstreamError("demo person unknown")
        return UpstreamIdentity(DEMO_PROVIDER_ID, person.key, dict(person.profile), ("pwd",))
