"""Properties of ``release_claims``: nothing outside requested ∩ policy ∩ consented, ever."""

from __future__ import annotations

from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.oidc.pairwise import pairwise_subject
from gateway.policy import Catalogue, ShopPolicy, check_folder, release_claims
from gateway.policy.lint import check_catalogue
from gateway.policy.models import FieldRule, Purpose, Texts
from gateway.policy.transforms import TRANSFORMS
from tests.conftest import REPO_POLICIES

CATALOGUE, _ = check_catalogue(REPO_POLICIES)
assert CATALOGUE is not None and check_folder(REPO_POLICIES) == []
FIELDS = sorted(CATALOGUE.fields)
PROFILE: dict[str, Any] = {
    "nickname": "李雷", "avatar": "https://a.example/x.png", "gender": "male", "region": "CN-GD",
    "city": "深圳", "email": "lilei@example.com", "phone": "13812345678", "birthdate": "1990-04-12",
    "real_name": "李雷", "id_number": "11010519900412001X",
    "address": {"country": "CN", "region": "CN-GD", "locality": "深圳", "street_address": "x"},
    "precise_location": {"latitude": 22.5, "longitude": 114.0, "locality": "深圳"},
}
TEXT = Texts.model_validate({"zh-CN": "目的", "en": "purpose"})


@st.composite
def policies(draw: st.DrawFn) -> ShopPolicy:
    purposes = [Purpose(id=f"p{i}", name=TEXT, description=TEXT, retention_days=30) for i in range(3)]
    rules = []
    for field in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=len(FIELDS))):
        transform = draw(st.sampled_from(CATALOGUE.fields[field].transforms))
        rules.append(FieldRule(field=field, purpose=draw(st.sampled_from(["p0", "p1", "p2"])),
                               transform=transform, required=draw(st.booleans())))
    return ShopPolicy(version=1, purposes=purposes, fields=rules)


def claim_names_of(field: str, catalogue: Catalogue) -> set[str]:
    spec = catalogue.fields[field]
    return {(t.claim or spec.claim) + t.claim_suffix for t in TRANSFORMS.values()}


def release(policy: ShopPolicy, requested: set[str], consented: set[tuple[str, str]],
            shop: str = "shop-a", person: str = "person-1") -> tuple[dict[str, Any], list[str]]:
    return release_claims(
        shop_id=shop, person_id=person, subject="sub-x", policy=policy, catalogue=CATALOGUE,
        requested=requested, consented=consented, profile=PROFILE,
        shop_key=lambda s: f"k-{s}".encode(), relay_domain="relay.gw.example", today=date(2026, 1, 1),
    )


@settings(max_examples=200)
@given(policy=policies(), requested=st.sets(st.sampled_from(FIELDS)),
       consented=st.sets(st.tuples(st.sampled_from(["p0", "p1", "p2", "other"]), st.sampled_from(FIELDS))))
def test_no_released_field_lies_outside_requested_policy_and_consent(
    policy: ShopPolicy, requested: set[str], consented: set[tuple[str, str]]
) -> None:
    claims, released = release(policy, requested, consented)
    allowed = {r.field for r in policy.fields
               if r.field in requested and (r.purpose, r.field) in consented and r.transform != "drop"}
    assert set(released) <= allowed
    possible_claims = {"sub"} | {c for f in allowed for c in claim_names_of(f, CATALOGUE)}
    assert set(claims) <= possible_claims
    assert claims["sub"] == "sub-x"


@settings(max_examples=100)
@given(policy=policies(), requested=st.sets(st.sampled_from(FIELDS)))
def test_nothing_is_released_without_consent(policy: ShopPolicy, requested: set[str]) -> None:
    claims, released = release(policy, requested, set())
    assert claims == {"sub": "sub-x"} and released == []


@given(person=st.text(min_size=1, max_size=30),
       sectors=st.lists(st.from_regex(r"[a-z]{1,12}\.example", fullmatch=True), min_size=2,
                        max_size=5, unique=True))
def test_no_two_sectors_get_the_same_subject_for_one_person(person: str, sectors: list[str]) -> None:
    subjects = {pairwise_subject(b"gateway-secret", sector, person) for sector in sectors}
    assert len(subjects) == len(sectors)


@given(shops=st.lists(st.from_regex(r"shop-[a-z0-9]{1,8}", fullmatch=True), min_size=2, max_size=5,
                      unique=True))
def test_no_two_shops_get_the_same_pseudonym_for_one_person(shops: list[str]) -> None:
    policy = ShopPolicy(version=1, purposes=[Purpose(id="p0", name=TEXT, description=TEXT,
                                                     retention_days=1)],
                        fields=[FieldRule(field="id_number", purpose="p0", transform="pseudonymise"),
                                FieldRule(field="email", purpose="p0", transform="relay_email")])
    values = [release(policy, {"id_number", "email"}, {("p0", "id_number"), ("p0", "email")}, shop=s)[0]
              for s in shops]
    assert len({v["id_number_pseudonym"] for v in values}) == len(shops)
    assert len({v["email"] for v in values}) == len(shops)
