"""Fault injection at every Redis round trip of a refresh (tests/consent/test_faults.py's
harness): the exchange and its audit event happen together or not at all, a refresh whose
event the log cannot take at once still answers with working tokens, and after a 503 the
shop's retry with the same token succeeds (the exchange, or a repeat of its answer:
gateway/oidc/repeats.py) instead of ending the family as a replay."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from gateway.store import Store
from gateway.store.grants import Peek
from tests.conftest import ISSUER, ShopHandle
from tests.consent.test_faults import audit_count, redis_dies, staged_actions
from tests.oidc.test_consistency import person_of, provider, tokens_of


def refresh(client: TestClient, shop: ShopHandle, refresh_token: str) -> Any:
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                       auth=(shop.client_id, shop.secret))


def used_up(client: TestClient, store: Store, refresh_token: str) -> bool:
    key = provider(client).tokens.token_key("refresh_token", refresh_token)
    return store.grants.peek(key, family_ttl=60, used_is_replay=False).outcome in (Peek.USED, Peek.REPEAT)


@pytest.fixture
def outage_client(shop: ShopHandle, make_settings: Callable[..., Settings],
                  store: Store) -> Iterator[TestClient]:
    """A client of its own (the suite's forbids any 5xx, these tests expect 503s), with
    refresh repeats on."""
    client = TestClient(create_app(make_settings(refresh_repeat_seconds=30), store=store), base_url=ISSUER,
                        follow_redirects=False,
                        raise_server_exceptions=False)
    yield client
    client.close()


def assert_only_503s(client: TestClient) -> None:
    registry = client.app.state.gateway.metrics.registry  # type: ignore[attr-defined]
    statuses = {s.labels.get("status", "") for m in registry.collect() for s in m.samples
                if s.name.endswith("_total") and s.value}
    assert {s for s in statuses if s.startswith("5")} <= {"503"}, statuses


def test_a_refresh_and_its_event_survive_redis_dying_at_every_step(
        outage_client: TestClient, shop: ShopHandle, store: Store) -> None:
    client = outage_client
    _, tokens = tokens_of(client, shop)
    person = person_of(store, shop)
    with redis_dies(after=10_000, lose_reply=False) as count:
        reply = refresh(client, shop, tokens["refresh_token"])
    assert reply.status_code == 200
    steps, tokens = count[0], reply.json()
    assert steps >= 2
    for lose_reply in (False, True):
        for after in range(steps):
            where = f"Redis lost at round trip {after + 1} (reply lost: {lose_reply})"
            logged_before = audit_count(client, person, "token_refreshed")
            with redis_dies(after, lose_reply):
                reply = refresh(client, shop, tokens["refresh_token"])
            assert reply.status_code in (200, 503), f"{where}: {reply.status_code} {reply.text}"
            exchanged = used_up(client, store, tokens["refresh_token"])
            recorded = audit_count(client, person, "token_refreshed") - logged_before
            staged = staged_actions(store, person).count("token_refreshed")
            assert exchanged == bool(recorded + staged), f"{where}: {exchanged}, events {recorded}+{staged}"
            provider(client).relay.flush(person)
            assert audit_count(client, person, "token_refreshed") - logged_before == int(exchanged), where
            if reply.status_code == 503:
                # The shop asks again with the same token: a repeat if the exchange was stored
                # (gateway/oidc/repeats.py), the exchange itself otherwise; never a replay.
                reply = refresh(client, shop, tokens["refresh_token"])
                assert reply.status_code == 200, f"{where}: the retry got {reply.status_code} {reply.text}"
                provider(client).relay.flush(person)
            assert audit_count(client, person, "token_refreshed") - logged_before == 1, where
            tokens = reply.json()
            assert client.get("/userinfo", headers={
                "Authorization": f"Bearer {tokens['access_token']}"}).status_code == 200, where
    assert_only_503s(client)


def test_a_refresh_is_answered_while_the_log_cannot_take_its_event(
        outage_client: TestClient, shop: ShopHandle, store: Store) -> None:
    client = outage_client
    from unittest import mock

    import redis

    _, tokens = tokens_of(client, shop)
    person = person_of(store, shop)
    ctx = provider(client)
    logged_before = audit_count(client, person, "token_refreshed")
    with mock.patch.object(ctx.audit.log, "append_event", side_effect=redis.ConnectionError("down")):
        reply = refresh(client, shop, tokens["refresh_token"])
    assert reply.status_code == 200, reply.text
    assert staged_actions(store, person) == ["token_refreshed"]
    assert sum(ctx.relay.flush_pending() for _ in range(store.commits.passes_per_sweep)) == 1
    assert audit_count(client, person, "token_refreshed") - logged_before == 1
    assert refresh(client, shop, reply.json()["refresh_token"]).status_code == 200


def test_a_repeat_gets_the_same_answer_and_records_nothing_more(
        outage_client: TestClient, shop: ShopHandle, store: Store) -> None:
    client = outage_client
    _, tokens = tokens_of(client, shop)
    person = person_of(store, shop)
    first = refresh(client, shop, tokens["refresh_token"])
    logged = audit_count(client, person, "token_refreshed")
    again = refresh(client, shop, tokens["refresh_token"])
    assert again.status_code == 200
    assert again.json()["access_token"] == first.json()["access_token"]
    assert again.json()["refresh_token"] == first.json()["refresh_token"]
    assert 0 < again.json()["expires_in"] <= first.json()["expires_in"]
    assert audit_count(client, person, "token_refreshed") == logged
    assert refresh(client, shop, again.json()["refresh_token"]).status_code == 200  # the chain goes on


def test_a_repeat_after_the_window_is_a_replay_that_ends_the_family(
        outage_client: TestClient, shop: ShopHandle, store: Store) -> None:
    client = outage_client
    _, tokens = tokens_of(client, shop)
    first = refresh(client, shop, tokens["refresh_token"]).json()
    answer = provider(client).tokens.token_key("refresh_token", tokens["refresh_token"]) + ":answer"
    assert store.redis.exists(answer)
    assert 0 < store.redis.ttl(answer) <= provider(client).tokens.repeat_seconds
    store.redis.delete(answer)  # as when its TTL ran out
    replay = refresh(client, shop, tokens["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert refresh(client, shop, first["refresh_token"]).status_code == 400  # the family is dead


def test_a_repeat_after_withdrawal_is_refused(outage_client: TestClient, shop: ShopHandle,
                                             store: Store) -> None:
    client = outage_client
    from gateway.oidc.account import AccountService

    _, tokens = tokens_of(client, shop)
    assert refresh(client, shop, tokens["refresh_token"]).status_code == 200
    AccountService(provider(client)).withdraw(person_of(store, shop), shop.client_id)
    stale = refresh(client, shop, tokens["refresh_token"])
    assert stale.status_code == 400 and stale.json()["error"] == "invalid_grant"
