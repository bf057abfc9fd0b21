"""Compact token and code records, families, family indexes and link indexes (issue 22,
docs/storage.md): what this version writes is small, reads back unchanged, and what the
version before wrote (named JSON members, sets of full key names) still works."""

from __future__ import annotations

import json
import string
from dataclasses import asdict, replace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gateway.oidc.account import AccountService
from gateway.oidc.credentials import AuthorizationCode, TokenRecord, read_code, read_token, to_stored
from gateway.store import KeySpace, Store
from gateway.upstream.links import LinkIndex
from tests.conftest import CLUSTER_RUN, ShopHandle
from tests.oidc.test_consistency import person_of, refresh, tokens_of, works

KEYS = KeySpace("cgtest:records:")
_ids = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=24)
_texts = st.text(max_size=24)
_maybe = st.none() | _texts


@st.composite
def _with_keys(draw: st.DrawFn, record: AuthorizationCode | TokenRecord) -> Any:
    """The record with its grant and family keys: the canonical ones, or others (records from
    before slot hints named an untagged family)."""
    grant = KEYS.person_grant(record.person_id, record.client_id)
    family = KEYS.token_family(record.person_id, record.family)
    return replace(record, grant_key=draw(st.just(grant) | _texts.map(lambda t: f"other:{t}")),
                   family_key=draw(st.just(family) | _texts.map(lambda t: f"other:{t}")))


codes = st.builds(
    AuthorizationCode, client_id=_ids, person_id=_ids, redirect_uri=_texts, scope=_texts, family=_ids,
    auth_time=st.integers(0, 2**40), nonce=_maybe, code_challenge=_maybe, code_challenge_method=_maybe,
    amr=st.lists(_texts, max_size=3), fields=st.lists(_texts, max_size=3), dpop_jkt=_maybe,
    gen=st.integers(0, 2**40), key=st.just("cgtest:records:{s1}:code:ab")).flatmap(_with_keys)
tokens = st.builds(
    TokenRecord, kind=st.sampled_from(["access_token", "refresh_token"]),
    key=st.just("cgtest:records:{s1}:rt:ab"), client_id=_ids, person_id=_ids, scope=_texts, family=_ids,
    issued_at=st.integers(0, 2**40), expires_at=st.integers(0, 2**40), auth_time=st.integers(0, 2**40),
    fields=st.lists(_texts, max_size=3), gen=st.integers(0, 2**40), jkt=_maybe).flatmap(_with_keys)


def _before(record: AuthorizationCode | TokenRecord) -> str:
    """A record as the version before compact records stored it."""
    data = asdict(record)
    for name in ("jkt", "dpop_jkt"):
        if data.get(name, "") is None:
            del data[name]
    return json.dumps(data)


@given(codes)
def test_a_code_reads_back_as_it_was_stored_in_either_format(code: AuthorizationCode) -> None:
    assert read_code(to_stored(code, KEYS), code.key, KEYS) == code
    assert read_code(_before(code), code.key, KEYS) == code


@given(tokens)
def test_a_token_reads_back_as_it_was_stored_in_either_format(token: TokenRecord) -> None:
    assert read_token(to_stored(token, KEYS), token.kind, token.key, KEYS) == token
    assert read_token(_before(token), token.kind, token.key, KEYS) == token


@given(tokens)
def test_a_stored_token_holds_nothing_its_key_or_its_other_members_say(token: TokenRecord) -> None:
    stored = json.loads(to_stored(token, KEYS))
    assert set(stored) <= {"c", "p", "s", "f", "i", "e", "a", "d", "g", "j", "G", "F"}
    assert ("G" in stored) == (token.grant_key != KEYS.person_grant(token.person_id, token.client_id))
    assert ("F" in stored) == (token.family_key != KEYS.token_family(token.person_id, token.family))
    assert ("j" in stored) == (token.jkt is not None) and ("d" in stored) == bool(token.fields)


def _family_and_index(store: Store, person: str, shop: ShopHandle) -> tuple[str, str]:
    index = store.keys.person_shop_families(person, shop.client_id)
    (family_id,) = cast(dict[bytes, bytes], store.redis.hgetall(index))
    return store.keys.token_family(person, family_id.decode()), index


def test_a_sign_in_leaves_compact_records_and_hashes(client: TestClient, shop: ShopHandle,
                                                     store: Store) -> None:
    _, issued = tokens_of(client, shop)
    person = person_of(store, shop)
    family, index = _family_and_index(store, person, shop)
    for key in (family, index, store.keys.person_links(person)):
        assert store.redis.object("encoding", key) == b"listpack", key
    entries = cast(dict[bytes, bytes], store.redis.hgetall(family))
    assert len(entries) == 2 and all(len(digest) == 64 for digest in entries)
    for digest, rest in entries.items():
        record = store.get(f"{store.keys.prefix}{rest.decode()}:{digest.decode()}")
        assert record is not None
        assert record == json.dumps(json.loads(record), separators=(",", ":")).encode()  # no spaces
    assert works(client, shop, issued) == ["access_token", "refresh_token"]


def _rewrite_as_before(store: Store, person: str, shop: ShopHandle, *, untagged_family: bool) -> str:
    """Turn the person's records, family, family index and link index into what the version
    before wrote; with ``untagged_family`` the family lives under its name from before slot
    hints. Returns the family key."""
    keys = store.keys
    family, index = _family_and_index(store, person, shop)
    family_id = family.rpartition(":")[2]
    old_family = f"{keys.prefix}fam:{family_id}" if untagged_family else family
    token_keys = []
    for digest, rest in cast(dict[bytes, bytes], store.redis.hgetall(family)).items():
        key = f"{keys.prefix}{rest.decode()}:{digest.decode()}"
        kind = "access_token" if rest.endswith(b":at") else "refresh_token"
        record = read_token(cast(bytes, store.get(key)), kind, key, keys)
        store.redis.set(key, _before(replace(record, family_key=old_family)), keepttl=True)
        token_keys.append(key)
    store.redis.delete(family, index)
    store.redis.sadd(old_family, *token_keys)
    store.redis.sadd(index, old_family)
    links = LinkIndex(store.redis, keys).link_keys(person)
    store.redis.delete(keys.person_links(person))
    store.redis.sadd(keys.person_links(person), *links)
    return old_family


@pytest.mark.parametrize("untagged_family", [False, pytest.param(True, marks=pytest.mark.skipif(
    CLUSTER_RUN, reason="untagged family keys never existed on a cluster"))])
def test_records_and_sets_written_before_keep_working_and_become_compact(
    client: TestClient, shop: ShopHandle, store: Store, untagged_family: bool
) -> None:
    _, issued = tokens_of(client, shop)
    person = person_of(store, shop)
    family = _rewrite_as_before(store, person, shop, untagged_family=untagged_family)
    assert works(client, shop, issued) == ["access_token", "refresh_token"]
    rotated = refresh(client, shop, issued["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    successors = rotated.json()
    assert works(client, shop, successors) == ["access_token", "refresh_token"]
    # The family took the new tokens and is a hash now, its index too; the new records name
    # the family only where it is not the canonical one.
    index = store.keys.person_shop_families(person, shop.client_id)
    assert store.redis.type(family) == b"hash" and store.redis.hlen(family) == 4
    assert store.redis.type(index) == b"hash"
    entries = cast(dict[bytes, bytes], store.redis.hgetall(family)).items()
    records = [json.loads(cast(bytes, store.get(f"{store.keys.prefix}{rest.decode()}:{d.decode()}"))
                          .removeprefix(b"!")) for d, rest in entries]
    assert sum(record.get("F") == family for record in records) == (2 if untagged_family else 0)
    # A replay of the used (old-format) refresh token ends every token of the family.
    assert refresh(client, shop, issued["refresh_token"]).status_code == 400
    assert works(client, shop, successors) == []
    assert store.redis.hkeys(family) == [b"!dead"]
    # A new sign-in's family joins the index; withdrawal frees every family it lists.
    _, again = tokens_of(client, shop)
    AccountService(client.app.state.gateway.provider).withdraw(person, shop.client_id)  # type: ignore[attr-defined]
    assert works(client, shop, again) == [] and not store.redis.exists(index)


def test_an_erasure_frees_links_families_and_tokens_listed_as_before(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    _, issued = tokens_of(client, shop)
    person = person_of(store, shop)
    family = _rewrite_as_before(store, person, shop, untagged_family=False)
    token_keys = store.members(family)
    links = LinkIndex(store.redis, store.keys).link_keys(person)
    assert links and store.redis.type(store.keys.person_links(person)) == b"set"
    AccountService(client.app.state.gateway.provider).erase(person)  # type: ignore[attr-defined]
    assert not any(store.redis.exists(key) for key in [*links, store.keys.person_links(person), *token_keys])
    assert store.redis.hkeys(family) == [b"!dead"]
    assert works(client, shop, issued) == []


def test_a_link_index_written_before_becomes_a_hash_at_the_next_link(store: Store) -> None:
    keys = store.keys
    index, person = LinkIndex(store.redis, keys), "p1"
    old = [keys.person_link("demo", "ab" * 32), keys.person_link("wechat:unionid:ns", "cd" * 32)]
    store.redis.sadd(keys.person_links(person), *old)
    added = keys.person_link("alipay:user_id", "ef" * 32)
    pipe = store.pipeline()
    index.queue_add(pipe, person, [added])
    pipe.execute()
    assert store.redis.object("encoding", keys.person_links(person)) == b"listpack"
    assert sorted(index.link_keys(person)) == sorted([*old, added])
