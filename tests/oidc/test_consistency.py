"""Consent is checked at every use: grant generations, peek-then-exchange, family tombstones.

Each test names a failure measured on main at 079fbc4 (issue 12) and shows it cannot
happen any more. The races with real processes are in test_races.py; here the
interleavings are forced step by step through the real services and the real Redis.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.testclient import TestClient

from gateway.audit.relay import stage
from gateway.oidc.account import AccountService
from gateway.oidc.tokens import StaleGrantError, TokenService
from gateway.store import Store
from gateway.store.grants import Exchange
from gateway.upstream.links import LinkIndex
from tests.conftest import (
    Browser,
    ShopHandle,
    authorize_params,
    exchange_code,
    pkce_pair,
    query_of,
    sign_in,
)
from tests.oidc.test_authorization_code_flow import decode_id_token


def provider(client: TestClient) -> Any:
    return client.app.state.gateway.provider  # type: ignore[attr-defined]


def person_of(store: Store, shop: ShopHandle) -> str:
    return next(k.decode().split("{p:")[1].split("}")[0]
                for k in store.redis.scan_iter(match=f"{store.keys.prefix}*consent:{shop.client_id}"))


def signed_in(client: TestClient, shop: ShopHandle) -> tuple[Browser, str, str]:
    """A person signed in and consented; returns the browser, an unredeemed code, its verifier."""
    browser = Browser(client)
    final, _, verifier = sign_in(browser, shop)
    return browser, query_of(final.headers["location"])["code"], verifier


def tokens_of(client: TestClient, shop: ShopHandle) -> tuple[Browser, dict[str, Any]]:
    browser, code, verifier = signed_in(client, shop)
    reply = exchange_code(client, shop, code, verifier)
    assert reply.status_code == 200, reply.text
    return browser, reply.json()


def refresh(client: TestClient, shop: ShopHandle, token: str, **extra: str) -> Any:
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token, **extra},
                       auth=(shop.client_id, shop.secret or ""))


def active(client: TestClient, shop: ShopHandle, token: str) -> bool:
    reply = client.post("/introspect", data={"token": token}, auth=(shop.client_id, shop.secret or ""))
    return bool(reply.json()["active"])


def works(client: TestClient, shop: ShopHandle, tokens: dict[str, Any]) -> list[str]:
    """Which of the two tokens still work (introspection, and userinfo for the access token)."""
    alive = []
    if active(client, shop, tokens["access_token"]) or client.get(
            "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 200:
        alive.append("access_token")
    if active(client, shop, tokens["refresh_token"]):
        alive.append("refresh_token")
    return alive


def test_refresh_with_a_wider_scope_fails_and_leaves_the_refresh_token_working(
    client: TestClient, shop: ShopHandle
) -> None:
    _, tokens = tokens_of(client, shop)
    wider = refresh(client, shop, tokens["refresh_token"], scope="openid profile email phone address")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    retry = refresh(client, shop, tokens["refresh_token"])
    assert retry.status_code == 200, retry.text
    assert active(client, shop, retry.json()["access_token"])


def test_a_wrong_pkce_verifier_does_not_use_up_the_code(client: TestClient, shop: ShopHandle) -> None:
    _, code, verifier = signed_in(client, shop)
    forged = exchange_code(client, shop, code, pkce_pair()[0])
    assert forged.status_code == 400 and forged.json()["error"] == "invalid_grant"
    assert exchange_code(client, shop, code, verifier).status_code == 200


def test_an_outstanding_code_is_refused_after_withdrawal(client: TestClient, shop: ShopHandle,
                                                         store: Store) -> None:
    _, code, verifier = signed_in(client, shop)
    AccountService(provider(client)).withdraw(person_of(store, shop), shop.client_id)
    reply = exchange_code(client, shop, code, verifier)
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant"


def test_an_outstanding_code_is_refused_after_erasure(client: TestClient, shop: ShopHandle,
                                                      store: Store) -> None:
    _, code, verifier = signed_in(client, shop)
    AccountService(provider(client)).erase(person_of(store, shop))
    reply = exchange_code(client, shop, code, verifier)
    assert reply.status_code == 400 and reply.json()["error"] == "invalid_grant"


def test_withdrawal_ends_tokens_mid_rotation_and_their_successors(client: TestClient, shop: ShopHandle,
                                                                  store: Store) -> None:
    """The measured race: a refresh loaded its token before the withdrawal and saved the new
    tokens after it. The successors carry the old generation, so they are dead on arrival."""
    _, tokens = tokens_of(client, shop)
    service: TokenService = provider(client).tokens
    old, _ = service.peek_refresh_token(tokens["refresh_token"])
    assert old is not None
    AccountService(provider(client)).withdraw(person_of(store, shop), shop.client_id)
    successor = {"access_token": service.new_credential(old.person_id),
                 "refresh_token": service.new_credential(old.person_id), "scope": old.scope}
    event = stage(provider(client).event("token_refreshed", person=old.person_id))
    assert service.exchange(old, successor, event) in (Exchange.STALE, Exchange.UNKNOWN)
    assert works(client, shop, tokens) == []
    assert service.find_access_token(successor["access_token"]) is None


def test_a_replay_seen_before_the_winner_saves_kills_the_winners_tokens(
    client: TestClient, shop: ShopHandle
) -> None:
    """Two requests peek one code; the second one wins the exchange after the first one's
    replay was detected: the family tombstone ends whatever the winner saves."""
    _, code, verifier = signed_in(client, shop)
    service: TokenService = provider(client).tokens
    first = service.peek_code(code)
    assert first is not None
    assert exchange_code(client, shop, code, verifier).status_code == 200  # the other request
    late = {"access_token": service.new_credential(first.person_id),
            "refresh_token": service.new_credential(first.person_id), "scope": first.scope}
    event = stage(provider(client).event("token_issued", person=first.person_id))
    assert service.exchange(first, late, event) is Exchange.REPLAYED
    assert service.find_access_token(late["access_token"]) is None
    replay = exchange_code(client, shop, code, verifier)
    assert replay.status_code == 400


def test_a_replayed_code_ends_the_tokens_it_issued(client: TestClient, shop: ShopHandle) -> None:
    _, code, verifier = signed_in(client, shop)
    tokens = exchange_code(client, shop, code, verifier).json()
    assert exchange_code(client, shop, code, verifier).status_code == 400
    assert works(client, shop, tokens) == []


def test_a_replayed_refresh_token_ends_the_family(client: TestClient, shop: ShopHandle) -> None:
    _, tokens = tokens_of(client, shop)
    rotated = refresh(client, shop, tokens["refresh_token"]).json()
    assert refresh(client, shop, tokens["refresh_token"]).status_code == 400
    assert works(client, shop, rotated) == []


def test_a_code_is_not_issued_under_a_generation_that_changed(client: TestClient, shop: ShopHandle,
                                                              store: Store) -> None:
    _, tokens = tokens_of(client, shop)
    person = person_of(store, shop)
    state = provider(client).consents.state(person, shop.client_id)
    AccountService(provider(client)).withdraw(person, shop.client_id, "account", "email")
    from gateway.oidc.tokens import AuthorizationCode, new_family

    record = AuthorizationCode(client_id=shop.client_id, person_id=person, redirect_uri=shop.redirect_uri,
                               scope="openid", family=new_family(), auth_time=0)
    try:
        provider(client).tokens.issue_code(provider(client).tokens.new_credential(person), record,
                                           state.generation)
    except StaleGrantError:
        pass
    else:
        raise AssertionError("a code was issued under a withdrawn generation")
    assert works(client, shop, tokens) == []


def test_after_a_full_withdrawal_the_shop_gets_nothing_until_the_person_consents_again(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    browser, tokens = tokens_of(client, shop)
    person = person_of(store, shop)
    account = AccountService(provider(client))
    account.withdraw(person, shop.client_id)
    assert works(client, shop, tokens) == []
    assert [c.shop.client_id for c in account.consents(person)] == []
    # The next authorization shows the consent screen instead of issuing a code.
    page = browser.follow(f"/authorize?{urlencode(authorize_params(shop, pkce_pair()[1]))}")
    assert page.status_code == 200 and 'action="/consent"' in page.text
    # prompt=none cannot skip it either.
    params = authorize_params(shop, pkce_pair()[1], prompt="none")
    quiet = browser.request("GET", f"/authorize?{urlencode(params)}")
    assert query_of(quiet.headers["location"])["error"] == "consent_required"


def test_withdrawing_everything_again_ends_tokens_issued_since_without_grants(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    """After a full withdrawal the person signs in again and ticks nothing: the shop still
    gets the pseudonym, the consent centre lists the shop while those tokens live, and
    withdrawing again ends them (on main at 079fbc4 it revoked nothing)."""
    browser, first = tokens_of(client, shop)
    person = person_of(store, shop)
    account = AccountService(provider(client))
    account.withdraw(person, shop.client_id)
    verifier, challenge = pkce_pair()
    page = browser.follow(f"/authorize?{urlencode(authorize_params(shop, challenge))}")
    final = browser.submit(page, [], decision="allow")
    tokens = exchange_code(client, shop, query_of(final.headers["location"])["code"], verifier).json()
    assert works(client, shop, tokens) == ["access_token", "refresh_token"]
    assert [c.shop.client_id for c in account.consents(person)] == [shop.client_id]
    account.withdraw(person, shop.client_id)
    assert works(client, shop, tokens) == [] and works(client, shop, first) == []
    assert account.consents(person) == []


def test_erasure_marker_makes_a_half_finished_erasure_a_new_person(
    client: TestClient, shop: ShopHandle, store: Store
) -> None:
    """Erasure crashed after its script and before the provider links were forgotten: the
    next sign-in must still be a new person (a new pairwise sub)."""
    _, tokens = tokens_of(client, shop)
    person = person_of(store, shop)
    index = LinkIndex(store.redis, store.keys)
    links = index.link_keys(person)
    saved = {k: store.get(k) for k in links}
    AccountService(provider(client)).erase(person)
    for key, value in saved.items():  # put the links back, as if forget() never ran
        assert value is not None
        store.redis.set(key, value)
    restore = store.pipeline()
    index.queue_add(restore, person, links)
    restore.execute()
    assert works(client, shop, tokens) == []
    _, again = tokens_of(client, shop)
    assert person_of(store, shop) != person
    assert (decode_id_token(client, again["id_token"])["sub"]
            != decode_id_token(client, tokens["id_token"])["sub"])
