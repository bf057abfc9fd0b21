"""After real sign-ins, Redis holds nothing personal in clear; erasure shreds for good."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.store import Store
from gateway.upstream.demo import DEMO_PEOPLE
from gateway.vault import DataKeyErasedError
from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in


def dump(store: Store) -> list[bytes]:
    """Every key name and every value under the test's prefix, as raw bytes."""
    out: list[bytes] = []
    for key in store.redis.scan_iter(match=f"{store.keys.prefix}*"):
        out.append(key)
        kind = store.redis.type(key)
        if kind == b"string":
            out.append(store.redis.get(key) or b"")
        elif kind == b"hash":
            for name, value in store.redis.hgetall(key).items():  # type: ignore[union-attr]
                out += [name, value]
        elif kind == b"set":
            out += list(store.redis.smembers(key))  # type: ignore[arg-type]
        elif kind == b"list":
            out += list(store.redis.lrange(key, 0, -1))  # type: ignore[arg-type]
        elif kind == b"zset":
            out += [m for m, _ in store.redis.zrange(key, 0, -1, withscores=True)]  # type: ignore[misc]
        elif kind == b"stream":
            for _, entry in store.redis.xrange(key):  # type: ignore[union-attr]
                for name, value in entry.items():
                    out += [name, value]
    return out


def clear_values() -> set[str]:
    values: set[str] = set()
    for person in DEMO_PEOPLE:
        values.add(person.key)  # the demo provider's subject: the "openid"
        for value in person.profile.values():
            if isinstance(value, dict):
                values |= {str(v) for v in value.values() if len(str(v)) >= 4}
            elif len(str(value)) >= 4:
                values.add(str(value))
    return values


def test_redis_holds_no_profile_value_token_or_provider_id_in_clear(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    secrets_seen: set[str] = set()
    for person in ("li-lei", "han-meimei"):
        final, _, verifier = sign_in(Browser(client), shop, person=person,
                                     scope="openid profile email phone")
        code = query_of(final.headers["location"])["code"]
        token = exchange_code(client, shop, code, verifier).json()
        info = client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
        assert info.status_code == 200
        secrets_seen |= {code, verifier, token["access_token"], token["refresh_token"]}
    blob = b"\n".join(dump(store))
    assert blob, "the dump is empty: the scan did not see the test's keys"
    for value in clear_values() | secrets_seen:
        for encoding in (value.encode(), json.dumps(value).encode()):
            assert encoding not in blob, f"found in clear: {value[:3]}…"


def test_erasure_shreds_copies_and_the_next_sign_in_starts_fresh(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    browser = Browser(client)
    sign_in(browser, shop)
    gateway: Any = client.app.state.gateway  # type: ignore[attr-defined]
    profiles = gateway.provider.profiles
    (profile_key,) = [k for k in store.redis.scan_iter(match=f"{store.keys.prefix}*:profile")]
    person_id = re.search(rb"\{p:([^}]+)\}", profile_key).group(1).decode()  # type: ignore[union-attr]
    backup = store.redis.hgetall(profile_key)  # what a backup of Redis would hold
    assert profiles.open(person_id, backup)["email"] == "lilei@example.com"

    page = browser.follow("/account")
    csrf = re.search(r'action="/account/erase">\s*<input type="hidden" name="csrf" value="([^"]+)"',
                     page.text)
    assert csrf
    browser.request("POST", "/account/erase", content=f"csrf={csrf.group(1)}&confirm=yes",
                    headers={"content-type": "application/x-www-form-urlencoded"})

    assert backup and all(backup.values())  # the sealed copies still exist…
    with pytest.raises(DataKeyErasedError):  # …and can no longer be opened
        profiles.open(person_id, backup)
    for name, blob in backup.items():
        with pytest.raises(DataKeyErasedError):
            profiles.envelope.open_field(person_id, name.decode(), blob)

    fresh = Browser(client)
    sign_in(fresh, shop)  # consent is asked again: a new person
    assert [p for p in fresh.pages if p.request.method == "GET" and p.url.path == "/consent"]
    (new_key,) = [k for k in store.redis.scan_iter(match=f"{store.keys.prefix}*:profile")]
    assert new_key != profile_key
