"""Each transform is a small pure function with the output the consent screen promises."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.transforms import TRANSFORMS, TransformContext, describe


def ctx(field: str = "phone", field_type: str = "phone", shop: str = "shop-a",
        person: str = "p1", today: date = date(2026, 11, 25)) -> TransformContext:
    return TransformContext(shop_id=shop, person_id=person, field=field, field_type=field_type,
                            shop_key=f"key-of-{shop}".encode(), relay_domain="relay.gw.example",
                            today=today)


def apply(name: str, value: object, context: TransformContext) -> object:
    return TRANSFORMS[name].apply(value, context)


def test_pass_returns_the_value() -> None:
    assert apply("pass", "李雷", ctx("nickname", "string")) == "李雷"


def test_mask_phone_hides_the_middle_digits() -> None:
    assert apply("mask", "13812345678", ctx()) == "138****5678"


def test_mask_email_hides_the_name() -> None:
    assert apply("mask", "lilei@example.com", ctx("email", "email")) == "l***@example.com"


def test_mask_name_keeps_the_first_character() -> None:
    assert apply("mask", "韩梅梅", ctx("real_name", "name")) == "韩**"


def test_mask_id_number_keeps_head_and_tail() -> None:
    assert apply("mask", "11010519900412001X", ctx("id_number", "id_number")) == "110***********001X"


def test_mask_of_a_short_value_hides_everything() -> None:
    assert apply("mask", "123", ctx()) == "***"


def test_pseudonym_is_stable_per_shop_and_differs_between_shops() -> None:
    a1 = apply("pseudonymise", "13812345678", ctx(shop="shop-a"))
    a2 = apply("pseudonymise", "13812345678", ctx(shop="shop-a"))
    b = apply("pseudonymise", "13812345678", ctx(shop="shop-b"))
    assert a1 == a2 != b
    assert "1381" not in str(a1)


def test_relay_email_is_an_alias_at_the_relay_domain() -> None:
    alias = str(apply("relay_email", "lilei@example.com", ctx("email", "email")))
    assert alias.endswith("@relay.gw.example")
    assert "lilei" not in alias
    assert alias != apply("relay_email", "lilei@example.com", ctx("email", "email", shop="shop-b"))


@pytest.mark.parametrize(("birthdate", "band"), [
    ("2020-01-01", "under-14"), ("2010-06-01", "14-17"), ("2008-11-25", "18-24"),
    ("2008-11-26", "14-17"), ("1990-04-12", "35-44"), ("1950-01-01", "65+"), ("not a date", None),
])
def test_age_band(birthdate: str, band: str | None) -> None:
    assert apply("generalise_age_band", birthdate, ctx("birthdate", "date")) == band


def test_age_over_18_is_exact_on_the_birthday() -> None:
    assert apply("generalise_age_over_18", "2008-11-25", ctx("birthdate", "date")) is True
    assert apply("generalise_age_over_18", "2008-11-26", ctx("birthdate", "date")) is False


def test_region_generalises_to_country() -> None:
    assert apply("generalise_country", "CN-GD", ctx("region", "region")) == "CN"


def test_address_generalises_to_city_and_province() -> None:
    address = {"country": "CN", "region": "CN-GD", "locality": "深圳", "street_address": "科技园 1 号"}
    assert apply("generalise_city", address, ctx("address", "address")) == {
        "country": "CN", "region": "CN-GD", "locality": "深圳"}
    assert apply("generalise_province", address, ctx("address", "address")) == {
        "country": "CN", "region": "CN-GD"}


def test_location_generalises_to_city_only() -> None:
    location = {"latitude": 22.54, "longitude": 114.05, "locality": "深圳"}
    assert apply("generalise_city", location, ctx("precise_location", "location")) == {"locality": "深圳"}


def test_drop_releases_nothing() -> None:
    assert apply("drop", "anything", ctx()) is None


def test_every_transform_has_plain_words_in_both_languages() -> None:
    for name in TRANSFORMS:
        assert "{field}" not in describe(name, "your phone number", "en")
        assert describe(name, "您的手机号码", "zh-CN")
    assert describe("mask", "your phone number", "en", "phone") == (
        "your phone number, partly hidden (like 138****5678)")


@given(st.text(min_size=1, max_size=40))
def test_pseudonyms_never_contain_the_value(value: str) -> None:
    pseudonym = str(apply("pseudonymise", value, ctx()))
    assert len(pseudonym) == 22
    if len(value.strip()) >= 4:
        assert value.strip().lower() not in pseudonym.lower()
