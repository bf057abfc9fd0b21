"""Property: after any withdrawal, the next release contains none of what was withdrawn."""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.consent import ConsentItem, ConsentService
from gateway.policy import ShopPolicy, release_claims
from gateway.policy.models import FieldRule, Purpose, Texts
from gateway.store import Store
from tests.policy.test_release import CATALOGUE, PROFILE

TEXT = Texts.model_validate({"zh-CN": "目的", "en": "purpose"})
RULES = [("account", "nickname", "pass"), ("account", "email", "mask"), ("account", "avatar", "pass"),
         ("contact", "phone", "mask"), ("invoice", "id_number", "pseudonymise"),
         ("account", "birthdate", "generalise_age_band")]
POLICY = ShopPolicy(
    version=1,
    purposes=[Purpose(id=p, name=TEXT, description=TEXT, retention_days=30)
              for p in ("account", "contact", "invoice")],
    fields=[FieldRule(field=f, purpose=p, transform=t) for p, f, t in RULES],
)
ITEMS = [ConsentItem(p, f, t, False, CATALOGUE.fields[f].sensitivity == "sensitive", 30, "consent")
         for p, f, t in RULES]


# The store fixture is shared by the examples on purpose: each example uses its own person.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(granted=st.sets(st.sampled_from([(p, f) for p, f, _ in RULES]), min_size=1),
       target=st.sampled_from([(None, None), ("account", None), ("account", "email"),
                               ("contact", "phone"), ("invoice", None)]),
       person=st.uuids())
def test_withdrawn_fields_are_never_released_afterwards(
    store: Store, granted: set[tuple[str, str]], target: tuple[str | None, str | None], person: object
) -> None:
    service = ConsentService(store)
    person_id = str(person)
    service.decide(person_id, "shop", 1, ITEMS, granted)
    withdrawn = {(g.purpose, g.field) for g in service.withdraw(person_id, "shop", *target)}
    record = service.find(person_id, "shop")
    assert record is not None
    _, released = release_claims(
        shop_id="shop", person_id=person_id, subject="s", policy=POLICY, catalogue=CATALOGUE,
        requested={f for _, f, _ in RULES}, consented=record.consented(record.decided_at),
        profile=PROFILE, shop_key=lambda s: b"k", relay_domain="r.example", today=date(2026, 1, 1))
    assert not {f for _, f in withdrawn} & set(released)
    assert set(released) == {f for p, f in granted - withdrawn}
    store.redis.delete(store.keys.person_consent(person_id, "shop"))
