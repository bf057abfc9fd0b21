"""Consent records: what is pending after grants, refusals, widening and expiry."""

from __future__ import annotations

import dataclasses

from gateway.consent import ConsentItem, ConsentService, Grant, KeptReceipt, PurposeStatement, pending_items
from gateway.store import Store


def item(field: str = "email", transform: str = "pass", retention: int = 30,
         basis: str = "consent", purpose: str = "account") -> ConsentItem:
    return ConsentItem(purpose, field, transform, False, False, retention, basis)


def test_everything_is_pending_without_a_record() -> None:
    items = [item("email"), item("nickname")]
    assert pending_items(items, None, 0) == items


def test_granted_items_are_not_pending_and_refused_ones_are_not_asked_again(store: Store) -> None:
    service = ConsentService(store)
    items = [item("email"), item("nickname")]
    record, grants = service.decide("p1", "shop", 1, items, {("account", "email")})
    assert [g.field for g in grants] == ["email"]
    assert pending_items(items, record, record.decided_at) == []
    assert pending_items(items, record, record.decided_at, ask_refused=True) == [items[1]]


def test_a_changed_transform_longer_retention_or_new_basis_is_asked_again(store: Store) -> None:
    service = ConsentService(store)
    record, _ = service.decide("p1", "shop", 1, [item()], {("account", "email")})
    for widened in (item(transform="mask"), item(retention=60), item(basis="contract")):
        assert pending_items([widened], record, record.decided_at) == [widened]
    assert pending_items([item(retention=10)], record, record.decided_at) == []


def test_expired_grants_are_pending(store: Store) -> None:
    service = ConsentService(store)
    record, (grant,) = service.decide("p1", "shop", 1, [item()], {("account", "email")})
    assert pending_items([item()], record, grant.expires_at + 1) == [item()]
    assert record.consented(grant.expires_at + 1) == set()


def test_withdrawal_by_field_purpose_or_shop(store: Store) -> None:
    service = ConsentService(store)
    items = [item("email"), item("nickname"), item("phone", purpose="delivery")]
    service.decide("p1", "shop", 1, items, {(i.purpose, i.field) for i in items})
    assert [g.field for g in service.withdraw("p1", "shop", "account", "email")] == ["email"]
    assert [g.field for g in service.withdraw("p1", "shop", "delivery")] == ["phone"]
    assert [g.field for g in service.withdraw("p1", "shop")] == ["nickname"]
    record = service.find("p1", "shop")
    assert record is not None and record.consented(0) == set()
    assert {r.kind for r in record.refusals} == {"withdrawn"}


def test_deciding_again_replaces_only_the_items_asked(store: Store) -> None:
    service = ConsentService(store)
    service.decide("p1", "shop", 1, [item("email"), item("nickname")], {("account", "email"),
                                                                       ("account", "nickname")})
    record, _ = service.decide("p1", "shop", 2, [item("email")], set())
    assert record.consented(0) == {("account", "nickname")}
    assert record.policy_version == 2


def test_record_round_trips_through_json(store: Store) -> None:
    service = ConsentService(store)

    def make_receipt(grants: list[Grant], at: int) -> KeptReceipt:
        statement = PurposeStatement("account", "Your account.", tuple(g.field for g in grants), at + 30)
        return KeptReceipt("0d5d6f5e-6a0e-4a43-9b9c-3f1f0f0f0f0f", at, "en", 3, "Shop", "", (statement,),
                           (), "digest")

    record, _ = service.decide("p1", "shop", 3, [item()], {("account", "email")},
                               make_receipt=make_receipt)
    again = service.find("p1", "shop")
    assert again is not None
    assert dataclasses.asdict(again) == dataclasses.asdict(record)
    (receipt,) = again.receipts
    assert receipt.purposes[0].fields == ("email",)
