"""The consent screen's content, grouped for people: purposes, then their fields in plain words.

Required ordinary fields of a purpose are one decision; optional fields are each a tick;
sensitive fields are each their own tick with the reason (PIPL art. 29/30). Nothing is
pre-ticked (GDPR art. 7, recital 32).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.consent import ConsentItem
from gateway.policy import Catalogue, ShopPolicy, describe
from gateway.web.i18n import translator


@dataclass(slots=True)
class ItemView:
    key: str
    words: str


@dataclass(slots=True)
class PurposeView:
    id: str
    name: str
    description: str
    legal_basis: str
    retention_days: int
    required: list[ItemView] = field(default_factory=list)
    optional: list[ItemView] = field(default_factory=list)
    sensitive: list[ItemView] = field(default_factory=list)


def consent_view(items: list[ConsentItem], policy: ShopPolicy, catalogue: Catalogue,
                 language: str) -> list[PurposeView]:
    t = translator(language)
    views: dict[str, PurposeView] = {}
    for item in items:
        purpose = policy.purpose(item.purpose)
        if purpose is None:
            continue
        view = views.setdefault(item.purpose, PurposeView(
            purpose.id, purpose.name.get(language), purpose.description.get(language),
            t[f"basis_{purpose.legal_basis}"], purpose.retention_days))
        spec = catalogue.fields[item.field]
        words = describe(item.transform, spec.description.get(language), language, spec.type)
        entry = ItemView(f"{item.purpose}:{item.field}", words)
        if item.sensitive:
            view.sensitive.append(entry)
        elif item.required:
            view.required.append(entry)
        else:
            view.optional.append(entry)
    return [views[p.id] for p in policy.purposes if p.id in views]


def granted_items(items: list[ConsentItem], fields: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (purpose, field) pairs the person ticked, among the items they were asked."""
    purposes = {value for name, value in fields if name == "purpose"}
    ticked = {tuple(value.split(":", 1)) for name, value in fields if name == "field" and ":" in value}
    granted: set[tuple[str, str]] = set()
    for item in items:
        key = (item.purpose, item.field)
        whole_purpose = item.required and not item.sensitive and item.purpose in purposes
        if whole_purpose or key in ticked:
            granted.add(key)
    return granted
