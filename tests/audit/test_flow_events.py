"""The real flows write the audit events: the exact sequence of a full sign-in, and the
staff question "which shops read this person's phone number, and under which consent?"."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from gateway.audit import AuditFilter
from tests.conftest import Browser, ShopHandle, exchange_code, query_of, sign_in


def events(client: TestClient, **filters: Any) -> list[Any]:
    audit = client.app.state.gateway.provider.audit  # type: ignore[attr-defined]
    items, cursor = [], 0
    while cursor is not None:
        page = audit.query.page(AuditFilter(**filters), cursor=cursor, limit=100)
        items += page.items
        cursor = page.next_cursor
    return [item.event for item in items]


def test_a_full_sign_in_writes_the_exact_sequence_of_events(client: TestClient, shop: ShopHandle) -> None:
    final, _, verifier = sign_in(Browser(client), shop, scope="openid profile email phone")
    token = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    client.get("/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"})
    auth = (shop.client_id, shop.secret)
    client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
                auth=auth)
    client.post("/introspect", data={"token": token["access_token"]}, auth=auth)
    client.post("/revoke", data={"token": token["access_token"]}, auth=auth)

    flow = [e for e in events(client) if e.action != "policy_loaded"]
    assert [e.action for e in flow] == [
        "sign_in", "consent_granted", "code_issued", "token_issued", "userinfo_read",
        "token_refreshed", "token_introspected", "token_revoked"]
    person = flow[0].person
    assert person and all(e.person == person for e in flow)
    assert {e.shop for e in flow[1:]} == {shop.client_id}
    granted, read = flow[1], flow[4]
    assert granted.actor_type == "person" and granted.policy_version == "1"
    assert set(granted.fields) == {"nickname", "avatar", "email", "birthdate", "phone"}
    assert read.actor_type == "shop" and read.purpose == "account+delivery_contact"
    assert set(read.fields) == {"nickname", "avatar", "email", "birthdate", "phone"}
    assert all(e.request_id for e in flow)
    text = " ".join(e.model_dump_json() for e in flow)
    for value in ("lilei@example.com", "13812345678", "李雷", token["access_token"], "li-lei"):
        assert value not in text


def test_policy_loads_are_recorded_at_start(client: TestClient, shop: ShopHandle) -> None:
    loaded = events(client, action="policy_loaded")
    assert [(e.shop, e.policy_version, e.actor_type) for e in loaded] == [(shop.client_id, "1", "system")]


def test_a_replayed_code_is_recorded_as_a_denied_revocation(client: TestClient, shop: ShopHandle) -> None:
    final, _, verifier = sign_in(Browser(client), shop)
    code = query_of(final.headers["location"])["code"]
    exchange_code(client, shop, code, verifier)
    exchange_code(client, shop, code, verifier)
    (revoked,) = events(client, action="token_revoked")
    assert (revoked.actor_type, revoked.outcome) == ("system", "denied")


def test_one_query_answers_who_read_a_persons_phone_and_under_which_consent(
    client: TestClient, shop: ShopHandle, make_shop: Any, make_client: Any
) -> None:
    other = make_shop("shop-b", redirect_uris=["https://b.example/cb"])
    client = make_client()
    browser = Browser(client)
    for target in (shop, other):
        final, _, verifier = sign_in(browser, target, scope="openid phone")
        token = exchange_code(client, target, query_of(final.headers["location"])["code"], verifier)
        client.get("/userinfo", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    person = events(client, action="sign_in")[0].person
    reads = events(client, person=person, field="phone", action="userinfo_read",
                   since="2020-01-01T00:00:00.000Z", until="2100-01-01T00:00:00.000Z")
    assert [(e.shop, e.purpose, e.policy_version) for e in reads] == [
        (shop.client_id, "delivery_contact", "1"), (other.client_id, "delivery_contact", "1")]


def test_withdrawal_export_and_erasure_are_recorded(client: TestClient, shop: ShopHandle) -> None:
    gateway = client.app.state.gateway  # type: ignore[attr-defined]
    sign_in(Browser(client), shop)
    person = events(client, action="sign_in")[0].person
    account = __import__("gateway.oidc.account", fromlist=["AccountService"]).AccountService(
        gateway.provider)
    account.withdraw(person, shop.client_id, "account", "email")
    account.export(person)
    account.erase(person)
    later = [e.action for e in events(client, person=person)][-4:]
    assert later == ["consent_withdrawn", "token_revoked", "profile_exported", "person_erased"]
    withdrawn = events(client, action="consent_withdrawn")[0]
    assert withdrawn.fields == ("email",) and withdrawn.purpose == "account"
