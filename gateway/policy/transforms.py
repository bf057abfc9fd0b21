"""Transforms: how a field is minimised before a shop receives it.

Each transform is a small pure function ``(value, context) -> value or None`` (None: nothing
is released) plus the plain words the consent screen uses for it. Adding a transform is one
function and one line in :data:`TRANSFORMS`; a catalogue field lists the transforms allowed
on it, and ``gateway policy check`` refuses any other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any


@dataclass(frozen=True, slots=True)
class TransformContext:
    """What a transform may know besides the value: never another shop's key."""

    shop_id: str
    person_id: str
    field: str
    field_type: str
    shop_key: bytes  # per-shop key for pseudonyms and relay aliases (derived by the caller)
    relay_domain: str
    today: date


def _keyed(ctx: TransformContext, *parts: str, length: int = 22) -> str:
    mac = hmac.new(ctx.shop_key, "\x00".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()[:length]


def passthrough(value: Any, ctx: TransformContext) -> Any:
    return value


def mask(value: Any, ctx: TransformContext) -> Any:
    """Hide the identifying middle: ``138****5678``, ``l***@example.com``, ``李*``."""
    text = str(value)
    if ctx.field_type == "email" and "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}***@{domain}"
    if ctx.field_type == "name":
        return text[:1] + "*" * max(len(text) - 1, 1)
    # Short values would be given away by their ends: hide them entirely.
    if len(text) < 6:
        return "*" * len(text)
    keep_head, keep_tail = (3, 4) if len(text) >= 10 else (1, 1)
    return text[:keep_head] + "*" * (len(text) - keep_head - keep_tail) + text[-keep_tail:]


def pseudonymise(value: Any, ctx: TransformContext) -> Any:
    """A stable code per shop: the same person gets the same code at one shop, and two
    shops cannot join their customers on it (the key differs per shop)."""
    return _keyed(ctx, "pseudonym", ctx.field, str(value).strip().lower())


def relay_email(value: Any, ctx: TransformContext) -> Any:
    """A per-shop alias at the gateway's relay domain instead of the real address."""
    return f"{_keyed(ctx, 'relay', ctx.person_id, length=16).lower()}@{ctx.relay_domain}"


def _age(birthdate: Any, today: date) -> int | None:
    try:
        born = date.fromisoformat(str(birthdate))
    except ValueError:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


AGE_BANDS = ((14, "under-14"), (18, "14-17"), (25, "18-24"), (35, "25-34"), (45, "35-44"),
             (55, "45-54"), (65, "55-64"))


def age_band(value: Any, ctx: TransformContext) -> Any:
    age = _age(value, ctx.today)
    if age is None:
        return None
    return next((band for limit, band in AGE_BANDS if age < limit), "65+")


def age_over_18(value: Any, ctx: TransformContext) -> Any:
    age = _age(value, ctx.today)
    return None if age is None else age >= 18


def country(value: Any, ctx: TransformContext) -> Any:
    """``CN-GD`` (ISO 3166-2) becomes ``CN``."""
    return str(value).split("-")[0] or None


def city(value: Any, ctx: TransformContext) -> Any:
    """An address or a location reduced to its city (OIDC ``address`` members)."""
    if isinstance(value, dict):
        keep = ("locality",) if ctx.field_type == "location" else ("country", "region", "locality")
        kept = {k: value[k] for k in keep if value.get(k)}
        return kept or None
    return None


def province(value: Any, ctx: TransformContext) -> Any:
    if isinstance(value, dict):
        kept = {k: value[k] for k in ("country", "region") if value.get(k)}
        return kept or None
    return None


def drop(value: Any, ctx: TransformContext) -> Any:
    return None


@dataclass(frozen=True, slots=True)
class Transform:
    apply: Callable[[Any, TransformContext], Any]
    words: dict[str, str]  # plain words for the consent screen; {field} is the field's noun
    claim: str | None = None  # claim name when it differs from the field's claim
    claim_suffix: str = ""


TRANSFORMS: dict[str, Transform] = {
    "pass": Transform(passthrough, {"en": "{field}", "zh-CN": "{field}"}),
    "mask": Transform(mask, {"en": "{field}, partly hidden (like {example})",
                             "zh-CN": "{field}（部分隐藏，如 {example}）"}),
    "pseudonymise": Transform(pseudonymise, {
        "en": "a code made from {field} that only this shop gets, not {field} itself",
        "zh-CN": "由{field}生成、仅该商店可用的代码，而非{field}本身"}, claim_suffix="_pseudonym"),
    "relay_email": Transform(relay_email, {
        "en": "a relay address that forwards to {field}, not the address itself",
        "zh-CN": "一个转发到{field}的中转地址，而非真实地址"}),
    "generalise_age_band": Transform(age_band, {"en": "only your age range (like 25-34), not {field}",
                                                "zh-CN": "仅您的年龄段（如 25-34 岁），而非{field}"},
                                     claim="age_band"),
    "generalise_age_over_18": Transform(age_over_18, {"en": "only whether you are 18 or older",
                                                      "zh-CN": "仅您是否年满 18 岁"},
                                        claim="age_over_18"),
    "generalise_country": Transform(country, {"en": "only your country, not {field}",
                                              "zh-CN": "仅您所在的国家，而非{field}"}, claim="country"),
    "generalise_city": Transform(city, {"en": "only the city of {field}",
                                        "zh-CN": "仅{field}中的城市"}),
    "generalise_province": Transform(province, {"en": "only the province of {field}",
                                                "zh-CN": "仅{field}中的省份"}),
    "drop": Transform(drop, {"en": "nothing: {field} is not shared", "zh-CN": "不共享{field}"}),
}


# What a masked value looks like, per field type, for the consent screen.
MASK_EXAMPLES = {"phone": "138****5678", "email": "l***@example.com", "name": "李*",
                 "id_number": "110***********001X"}


def describe(transform: str, field_noun: str, language: str, field_type: str = "") -> str:
    """The transform in plain words, e.g. "your phone number, partly hidden (like 138****5678)"."""
    words = TRANSFORMS[transform].words
    example = MASK_EXAMPLES.get(field_type, "******")
    return (words.get(language) or words["en"]).format(field=field_noun, example=example)
