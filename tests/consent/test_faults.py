"""Fault injection at every step of consent grant, withdrawal and erasure.

Redis "dies" at the n-th round trip of the operation — either the command never reaches it,
or it runs and its reply is lost — and stays dead for the rest of the operation. Afterwards
(Redis back) either the change and its audit event are both there, or neither is; the relay
completes what was staged, exactly once; and a withdrawal or erasure that happened leaves
no working token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
import redis
from redis.connection import AbstractConnection
from starlette.testclient import TestClient

from gateway.audit.relay import stage
from gateway.consent import consent_items
from gateway.oidc.account import AccountService
from gateway.store import Store
from tests.audit.test_flow_events import events
from tests.conftest import ShopHandle
from tests.oidc.test_consistency import person_of, provider, tokens_of, works


class Injected(redis.ConnectionError):
    pass


@contextmanager
def redis_dies(after: int, lose_reply: bool) -> Iterator[list[int]]:
    """Round trips 1..after go through; the next one is lost (sent and its reply lost, if
    ``lose_reply``), and every later one fails. Yields the count of round trips made."""
    real = AbstractConnection.send_packed_command
    count = [0]

    def send(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        count[0] += 1
        if count[0] <= after:
            real(self, command, check_health)
            return
        if lose_reply and count[0] == after + 1:
            real(self, command, check_health)
            self.disconnect()  # the reply is never read
        raise Injected("injected fault")

    with mock.patch.object(AbstractConnection, "send_packed_command", send):
        yield count


def audit_count(client: TestClient, person: str, action: str) -> int:
    return len(events(client, person=person, action=action))


def staged_actions(store: Store, person: str) -> list[str]:
    import json

    return [json.loads(s.payload)["action"] for s in store.commits.staged(person)]


def round_trips(operation: Callable[[], object]) -> int:
    with redis_dies(after=10_000, lose_reply=False) as count:
        operation()
    return count[0]


OPERATIONS = ["withdraw_all", "withdraw_field", "erase", "grant"]


def prepare(client: TestClient, shop: ShopHandle, store: Store, operation: str
            ) -> tuple[str, dict[str, Any], Callable[[], object], str]:
    """A signed-in person with tokens; the operation to break, and the action it records."""
    _, tokens = tokens_of(client, shop)
    person = person_of(store, shop)
    ctx = provider(client)
    account = AccountService(ctx)
    if operation == "withdraw_all":
        return person, tokens, lambda: account.withdraw(person, shop.client_id), "consent_withdrawn"
    if operation == "withdraw_field":
        return (person, tokens, lambda: account.withdraw(person, shop.client_id, "account", "email"),
                "consent_withdrawn")
    if operation == "erase":
        return person, tokens, lambda: account.erase(person), "person_erased"
    # A fresh grant decision, as the consent screen's submit makes it.
    shop_obj = ctx.shops.get(shop.client_id)
    items = consent_items(shop_obj.config.policy, ctx.catalogue, {"email", "nickname"})

    def grant() -> None:
        ctx.consents.decide(person, shop.client_id, 1, items, {(i.purpose, i.field) for i in items},
                            describe=lambda _, __: [stage(ctx.event(
                                "consent_granted", actor_type="person", actor_id=person, person=person,
                                shop=shop.client_id, fields=[i.field for i in items]))])
        ctx.relay_staged(person)

    return person, tokens, grant, "consent_granted"


def changed(client: TestClient, store: Store, shop: ShopHandle, person: str, operation: str,
            before: bytes | None) -> bool:
    if operation == "erase":
        return bool(store.redis.exists(store.keys.person_erased(person)))
    return store.get(store.keys.person_consent(person, shop.client_id)) != before


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_change_and_its_event_survive_redis_dying_at_every_step(
    client: TestClient, shop: ShopHandle, store: Store, operation: str
) -> None:
    person, _, operation_call, _ = prepare(client, shop, store, operation)
    steps = round_trips(lambda: None)  # the harness itself makes none
    assert steps == 0
    # How many round trips the operation makes when nothing fails (on a throwaway person).
    _, _, probe, _ = prepare(client, shop, store, operation)
    steps = round_trips(probe)
    assert steps >= 2
    for lose_reply in (False, True):
        for after in range(steps):
            person, tokens, call, action = prepare(client, shop, store, operation)
            before = store.get(store.keys.person_consent(person, shop.client_id))
            logged_before = audit_count(client, person, action)
            with redis_dies(after, lose_reply):
                try:
                    call()
                except redis.ConnectionError:
                    pass
            did = changed(client, store, shop, person, operation, before)
            recorded = audit_count(client, person, action) - logged_before
            pending = staged_actions(store, person).count(action)
            where = f"{operation}, Redis lost at round trip {after + 1} (reply lost: {lose_reply})"
            assert did == bool(recorded + pending), f"{where}: change {did}, events {recorded}+{pending}"
            provider(client).relay.flush(person)
            assert audit_count(client, person, action) - logged_before == int(did), where
            assert staged_actions(store, person) == [], where
            if did and operation != "grant":
                assert works(client, shop, tokens) == [], f"{where}: tokens still work"
    del operation_call


def test_the_background_relay_appends_what_the_request_could_not(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    person, tokens, _, _ = prepare(client, shop, store, "withdraw_all")
    ctx = provider(client)
    with mock.patch.object(ctx.audit.log, "append_event", side_effect=redis.ConnectionError("down")):
        AccountService(ctx).withdraw(person, shop.client_id)
    assert works(client, shop, tokens) == []  # the withdrawal took effect without the log
    assert staged_actions(store, person) == ["consent_withdrawn", "token_revoked"] or sorted(
        staged_actions(store, person)) == ["consent_withdrawn", "token_revoked"]
    assert store.commits.is_pending(person)
    sweep = store.commits.passes_per_sweep  # on a cluster the relay looks at a slot range per pass
    assert sum(ctx.relay.flush_pending() for _ in range(sweep)) == 2
    assert audit_count(client, person, "consent_withdrawn") == 1
    assert sum(ctx.relay.flush_pending() for _ in range(sweep)) == 0 and not store.commits.is_pending(person)


def test_nothing_is_released_before_the_consent_it_rests_on_is_recorded(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    """A consent granted while the log was down: the next userinfo relays the staged
    ``consent_granted`` first, so the log shows it before the ``userinfo_read``."""
    _, tokens = tokens_of(client, shop)
    person = person_of(store, shop)
    ctx = provider(client)
    shop_obj = ctx.shops.get(shop.client_id)
    items = consent_items(shop_obj.config.policy, ctx.catalogue, {"email"})
    with mock.patch.object(ctx.audit.log, "append_event", side_effect=redis.ConnectionError("down")):
        ctx.consents.decide(
            person, shop.client_id, 1, items, {(i.purpose, i.field) for i in items},
            describe=lambda _, __: [stage(ctx.event("consent_granted", actor_type="person", actor_id=person,
                                                    person=person, shop=shop.client_id))])
        ctx.relay_staged(person)
    assert staged_actions(store, person) == ["consent_granted"]
    reply = client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert reply.status_code == 200
    actions = [e.action for e in events(client, person=person)]
    assert actions[-2:] == ["consent_granted", "userinfo_read"]


def test_relayed_events_are_appended_once_even_when_relays_race(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    person, _, _, _ = prepare(client, shop, store, "withdraw_all")
    ctx = provider(client)
    with mock.patch.object(ctx.audit.log, "append_event", side_effect=redis.ConnectionError("down")):
        AccountService(ctx).withdraw(person, shop.client_id)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: ctx.relay.flush(person), range(8)))
    assert audit_count(client, person, "consent_withdrawn") == 1
    assert audit_count(client, person, "token_revoked") == 1
