"""Consent records per person and shop, versioned against the shop's policy.

A record holds *grants* — (purpose, field) pairs with the transform, retention and policy
version they were given under, and when they expire — and *refusals*: items the person
declined or later withdrew. Refused items are not asked for again on ordinary sign-ins
(PIPL art. 16: no nagging, no refusal of service over optional data); they are shown again,
never pre-ticked, only when the shop asks with ``prompt=consent`` or the policy widens them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from gateway.policy import Catalogue, ShopPolicy
from gateway.store import Store

DAY = 86400


@dataclass(frozen=True, slots=True)
class ConsentItem:
    """One thing the consent screen asks about: a field for a purpose, as the policy says."""

    purpose: str
    field: str
    transform: str
    required: bool
    sensitive: bool
    retention_days: int
    legal_basis: str


@dataclass(frozen=True, slots=True)
class Grant:
    purpose: str
    field: str
    transform: str
    retention_days: int
    legal_basis: str
    policy_version: int
    granted_at: int
    expires_at: int

    def covers(self, item: ConsentItem, now: float) -> bool:
        # A change of transform, a longer retention or another legal basis is a widening:
        # the person is asked again (PIPL art. 14, second paragraph).
        return (self.expires_at > now and self.transform == item.transform
                and self.retention_days >= item.retention_days
                and self.legal_basis == item.legal_basis)


@dataclass(frozen=True, slots=True)
class Refusal:
    purpose: str
    field: str
    transform: str
    at: int
    kind: Literal["declined", "withdrawn"]


@dataclass(slots=True)
class ConsentRecord:
    client_id: str
    policy_version: int = 0
    decided_at: float = 0.0  # time.time() of the person's last decision
    method: str = "consent_screen"
    grants: list[Grant] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)

    def consented(self, now: float) -> set[tuple[str, str]]:
        """The (purpose, field) pairs that may be released now."""
        return {(g.purpose, g.field) for g in self.grants if g.expires_at > now}

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ConsentRecord:
        data = json.loads(raw)
        return cls(
            client_id=data["client_id"], policy_version=data["policy_version"],
            decided_at=data["decided_at"], method=data.get("method", "consent_screen"),
            grants=[Grant(**g) for g in data["grants"]],
            refusals=[Refusal(**r) for r in data["refusals"]],
            receipts=list(data.get("receipts", [])),
        )


def consent_items(policy: ShopPolicy, catalogue: Catalogue, requested: set[str]) -> list[ConsentItem]:
    """The policy's items for the fields a request asks for (drop-transforms never asked)."""
    items = []
    for rule in policy.fields:
        purpose = policy.purpose(rule.purpose or "")
        spec = catalogue.fields.get(rule.field)
        if purpose is None or spec is None or rule.transform == "drop" or rule.field not in requested:
            continue
        items.append(ConsentItem(purpose.id, rule.field, rule.transform, rule.required,
                                 spec.sensitivity == "sensitive", purpose.retention_days,
                                 purpose.legal_basis))
    return items


def pending_items(items: list[ConsentItem], record: ConsentRecord | None, now: float,
                  ask_refused: bool = False) -> list[ConsentItem]:
    """Items not covered by a live grant; refused ones only when ``ask_refused``."""
    if record is None:
        return list(items)
    pending = []
    for item in items:
        if any(g.purpose == item.purpose and g.field == item.field and g.covers(item, now)
               for g in record.grants):
            continue
        refused = any(r.purpose == item.purpose and r.field == item.field
                      and r.transform == item.transform for r in record.refusals)
        if refused and not ask_refused:
            continue
        pending.append(item)
    return pending


class ConsentService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _key(self, person_id: str, client_id: str) -> str:
        return self._store.keys.person_consent(person_id, client_id)

    def find(self, person_id: str, client_id: str) -> ConsentRecord | None:
        raw = self._store.get(self._key(person_id, client_id))
        return ConsentRecord.from_json(raw) if raw is not None else None

    def save(self, person_id: str, record: ConsentRecord) -> None:
        self._store.redis.set(self._key(person_id, record.client_id), record.to_json())

    def decide(self, person_id: str, client_id: str, policy_version: int,
               asked: list[ConsentItem], granted: set[tuple[str, str]],
               method: str = "consent_screen",
               make_receipt: Callable[[list[Grant], int], str] | None = None,
               ) -> tuple[ConsentRecord, list[Grant]]:
        """Record the person's answer to the items they were ``asked``: ``granted`` ones
        become grants, the others refusals; a receipt for the new grants is kept with the
        record. Returns the record and the new grants."""
        now = int(time.time())
        record = self.find(person_id, client_id) or ConsentRecord(client_id)
        asked_keys = {(i.purpose, i.field) for i in asked}
        record.grants = [g for g in record.grants if (g.purpose, g.field) not in asked_keys]
        record.refusals = [r for r in record.refusals if (r.purpose, r.field) not in asked_keys]
        new_grants = []
        for item in asked:
            if (item.purpose, item.field) in granted:
                grant = Grant(item.purpose, item.field, item.transform, item.retention_days,
                              item.legal_basis, policy_version, now,
                              now + item.retention_days * DAY)
                record.grants.append(grant)
                new_grants.append(grant)
            else:
                record.refusals.append(Refusal(item.purpose, item.field, item.transform, now,
                                               "declined"))
        record.policy_version = policy_version
        record.decided_at = time.time()
        record.method = method
        if make_receipt is not None:
            record.receipts.append(make_receipt(new_grants, now))
        self.save(person_id, record)
        return record, new_grants

    def withdraw(self, person_id: str, client_id: str, purpose: str | None = None,
                 field_name: str | None = None) -> list[Grant]:
        """Withdraw grants (all of a shop, one purpose, or one field of a purpose); returns
        what was withdrawn. Takes effect on the shop's next userinfo call."""
        record = self.find(person_id, client_id)
        if record is None:
            return []
        now = int(time.time())

        def matches(grant: Grant) -> bool:
            return (purpose in (None, grant.purpose)) and (field_name in (None, grant.field))

        withdrawn = [g for g in record.grants if matches(g)]
        record.grants = [g for g in record.grants if not matches(g)]
        record.refusals += [Refusal(g.purpose, g.field, g.transform, now, "withdrawn")
                            for g in withdrawn]
        self.save(person_id, record)
        return withdrawn
