"""Receipts kept by digest: re-issued exactly, refused when anything differs; the record's
compact format round-trips, and records of the format before it are still read."""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from gateway.consent import (
    ConsentItem,
    ConsentRecord,
    ConsentService,
    Grant,
    KeptReceipt,
    PurposeStatement,
    ReceiptMismatchError,
    Refusal,
    keep_receipt,
    receipt_digest,
    reissue,
)
from gateway.policy import Catalogue, ShopPolicy, load_policies
from gateway.store import Store

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ISSUER = "https://gateway.test"
SUBJECT = "pairwise-subject-of-li-lei"
SIGNING_KEY = ECKey.generate_key("P-256", parameters={"kid": "receipts-test"})


@cache
def demo_shop() -> tuple[ShopPolicy, Catalogue]:
    data = yaml.safe_load((POLICIES / "shops" / "demo-shop.yaml").read_text(encoding="utf-8"))
    return ShopPolicy.model_validate(data["policy"]), load_policies(POLICIES)


def sign(claims: dict[str, Any]) -> str:
    return jwt.encode({"alg": "ES256", "kid": "receipts-test"}, claims, SIGNING_KEY, algorithms=["ES256"])


def verified_claims(token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set({"keys": [SIGNING_KEY.as_dict(private=False)]})
    return dict(jwt.decode(token, keys, algorithms=["ES256"]).claims)


def every_grant(at: int = 1_796_351_625) -> list[Grant]:
    policy, _ = demo_shop()
    by_purpose = {p.id: p for p in policy.purposes}
    grants = []
    for rule in policy.fields:
        purpose = by_purpose[rule.purpose or ""]
        if rule.transform != "drop":
            grants.append(Grant(purpose.id, rule.field, rule.transform, purpose.retention_days,
                                purpose.legal_basis, policy.version, at, at + purpose.retention_days * 86400))
    return grants


def demo_receipt(grants: list[Grant], language: str = "en", at: int = 1_796_351_625) -> KeptReceipt:
    policy, catalogue = demo_shop()
    return keep_receipt(issuer=ISSUER, shop_id="demo-shop", shop_name="Demo Shop",
                        shop_contact="privacy@demo-shop.invalid", subject=SUBJECT, policy=policy,
                        catalogue=catalogue, grants=grants, language=language, timestamp=at)


def test_a_reissued_receipt_verifies_and_says_what_was_granted_when() -> None:
    grants = every_grant()
    kept = demo_receipt(grants)
    claims = verified_claims(reissue(kept, issuer=ISSUER, shop_id="demo-shop", subject=SUBJECT, sign=sign))
    assert receipt_digest(claims) == kept.digest
    assert claims["iss"] == ISSUER and claims["sub"] == claims["piiPrincipalId"] == SUBJECT
    assert claims["iat"] == claims["consentTimestamp"] == 1_796_351_625
    assert claims["jti"] == claims["consentReceiptID"] == kept.receipt_id
    (service,) = claims["services"]
    stated = {(purpose_id, field) for p in service["purposes"] for purpose_id in p["purposeCategory"]
              for field in p["piiCategory"]}
    assert stated == {(g.purpose, g.field) for g in grants}
    terminations = {p["purposeCategory"][0]: p["termination"] for p in service["purposes"]}
    assert terminations == {g.purpose: g.expires_at for g in grants}
    age_check = next(p for p in service["purposes"] if p["purposeCategory"] == ["age_check"])
    assert age_check["purpose"] == "Some products are sold only to customers aged 18 or over."
    assert claims["policyUrl"] == f"{ISSUER}/policies/demo-shop/v1"
    assert claims["sensitive"] is True and claims["spiCat"] == ["id_number", "phone", "precise_location"]


def test_signing_again_gives_the_same_claims_under_a_new_signature() -> None:
    kept = demo_receipt(every_grant(), language="zh-CN")
    first, second = (reissue(kept, issuer=ISSUER, shop_id="demo-shop", subject=SUBJECT, sign=sign)
                     for _ in range(2))
    assert first != second  # ES256 signatures are randomised
    assert verified_claims(first) == verified_claims(second)
    assert "部分商品仅向年满 18 岁的顾客出售。" in json.dumps(verified_claims(first), ensure_ascii=False)


def test_a_receipt_is_not_signed_when_its_claims_differ_from_the_digest() -> None:
    kept = demo_receipt(every_grant())
    widened = dataclasses.replace(kept, purposes=(
        *kept.purposes, PurposeStatement("marketing", "Advertising.", ("phone",), 1_900_000_000)))
    attempts = [
        dict(receipt=widened, issuer=ISSUER, subject=SUBJECT),  # the record was altered
        dict(receipt=dataclasses.replace(kept, timestamp=kept.timestamp - 1), issuer=ISSUER,
             subject=SUBJECT),
        dict(receipt=kept, issuer="https://elsewhere.test", subject=SUBJECT),
        dict(receipt=kept, issuer=ISSUER, subject="another-sector-subject"),
    ]
    for attempt in attempts:
        with pytest.raises(ReceiptMismatchError):
            reissue(attempt["receipt"], issuer=str(attempt["issuer"]), shop_id="demo-shop",  # type: ignore[arg-type]
                    subject=str(attempt["subject"]), sign=sign)


def test_the_record_keeps_a_digest_not_a_signed_receipt_and_stays_small(store: Store) -> None:
    policy, _ = demo_shop()
    items = [ConsentItem(g.purpose, g.field, g.transform, False, False, g.retention_days, g.legal_basis)
             for g in every_grant()]
    service = ConsentService(store)
    record, grants = service.decide("p1", "demo-shop", policy.version, items,
                                    {(i.purpose, i.field) for i in items},
                                    make_receipt=lambda grants, at: demo_receipt(grants, at=at))
    stored = store.redis.get(store.keys.person_consent("p1", "demo-shop"))
    assert isinstance(stored, bytes) and b"eyJ" not in ConsentRecord.from_stored(stored).to_json().encode()
    assert len(grants) == len(items) == 12
    # Every field of the demo shop granted, with its receipt: the format before this one
    # took 4,553 bytes for ten of them.
    assert len(stored) < 900
    assert service.find("p1", "demo-shop") == record


# -- the stored format ------------------------------------------------------------------

names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
times = st.integers(min_value=0, max_value=2**40)
grants = st.builds(Grant, names, names, names, st.integers(1, 3650), names, st.integers(1, 99), times,
                   times)
refusals = st.builds(Refusal, names, names, names, times, st.sampled_from(["declined", "withdrawn"]))
statements = st.builds(PurposeStatement, names, names, st.lists(names, max_size=4).map(tuple), times)
receipts = st.builds(KeptReceipt, st.uuids().map(str), times, st.sampled_from(["en", "zh-CN"]),
                     st.integers(1, 99), names, names, st.lists(statements, max_size=3).map(tuple),
                     st.lists(names, max_size=3).map(tuple), names)
records = st.builds(ConsentRecord, names, st.integers(0, 99),
                    st.floats(min_value=0, max_value=2e9, allow_nan=False), names,
                    st.lists(grants, max_size=6), st.lists(refusals, max_size=4),
                    st.lists(receipts, max_size=2), st.lists(names, max_size=2),
                    st.one_of(st.just(0.0), st.floats(min_value=1, max_value=2e9)))


@given(records)
def test_any_record_round_trips_through_the_stored_format(record: ConsentRecord) -> None:
    assert ConsentRecord.from_stored(record.to_stored()) == record
    assert ConsentRecord.from_stored(record.to_json()) == record  # format 2, not deflated


def test_a_truncated_record_or_one_of_an_unknown_format_is_refused_not_misread() -> None:
    stored = ConsentRecord("demo-shop", grants=every_grant()).to_stored()
    with pytest.raises(ValueError, match="truncated"):
        ConsentRecord.from_stored(stored[:len(stored) // 2 // 5 * 5])
    with pytest.raises(ValueError, match="unknown format 3"):
        ConsentRecord.from_stored(json.dumps({"v": 3, "c": "demo-shop"}))


@given(st.lists(st.sampled_from(every_grant()), max_size=20))
def test_grants_keep_their_order_whatever_runs_they_form(kept: list[Grant]) -> None:
    record = ConsentRecord("demo-shop", grants=kept)
    assert ConsentRecord.from_json(record.to_json()).grants == kept


# A record as the gateway wrote it before receipts were kept by digest (shortened: two
# grants, one refusal, the signed receipt a placeholder JWT).
OLD_FORMAT = json.dumps({
    "client_id": "demo-shop", "policy_version": 1, "decided_at": 1796351625.8503132,
    "method": "consent_screen",
    "grants": [
        {"purpose": "account", "field": "nickname", "transform": "pass", "retention_days": 365,
         "legal_basis": "contract", "policy_version": 1, "granted_at": 1796351625,
         "expires_at": 1827887625},
        {"purpose": "delivery_contact", "field": "phone", "transform": "mask", "retention_days": 90,
         "legal_basis": "consent", "policy_version": 1, "granted_at": 1796351625,
         "expires_at": 1804127625},
    ],
    "refusals": [{"purpose": "account", "field": "avatar", "transform": "pass", "at": 1796351625,
                  "kind": "declined"}],
    "receipts": ["eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJvbGQifQ.c2lnbmF0dXJl"],
    "withdrawn_at": 0.0,
})


def test_a_record_of_the_format_before_is_read_and_keeps_its_signed_receipts(store: Store) -> None:
    store.redis.set(store.keys.person_consent("p1", "demo-shop"), OLD_FORMAT)
    service = ConsentService(store)
    old = service.find("p1", "demo-shop")
    assert old is not None
    assert old.consented(1796351626) == {("account", "nickname"), ("delivery_contact", "phone")}
    assert [(r.field, r.kind) for r in old.refusals] == [("avatar", "declined")]
    assert old.signed_receipts == json.loads(OLD_FORMAT)["receipts"] and old.receipts == []
    # Its next change writes the compact format, keeping the old signed receipt as it was.
    withdrawn = service.withdraw("p1", "demo-shop", "delivery_contact")
    assert [g.field for g in withdrawn] == ["phone"]
    stored = store.redis.get(store.keys.person_consent("p1", "demo-shop"))
    assert isinstance(stored, bytes) and json.loads(ConsentRecord.from_stored(stored).to_json())["v"] == 2
    again = service.find("p1", "demo-shop")
    assert again is not None and again.signed_receipts == old.signed_receipts
    assert again.grants == old.grants[:1]
