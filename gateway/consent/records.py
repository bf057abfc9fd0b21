"""Consent records per person and shop, versioned against the shop's policy.

A record holds *grants* — (purpose, field) pairs with the transform, retention and policy
version they were given under, and when they expire — and *refusals*: items the person
declined or later withdrew. Refused items are not asked for again on ordinary sign-ins
(PIPL art. 16: no nagging, no refusal of service over optional data); they are shown again,
never pre-ticked, only when the shop asks with ``prompt=consent`` or the policy widens them.

Every change is one script (:mod:`gateway.store.commits`): the record is replaced only if
it is still as it was read (so two changes never lose one another), a narrowing ends the
grant's generation (so every code and token issued before it stops working at once), and
the change's audit events are staged in the person's outbox in the same step.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from gateway.consent.deflate import deflate, inflate, is_deflated
from gateway.consent.receipts import KeptReceipt, decode_receipt, encode_receipt
from gateway.policy import Catalogue, ShopPolicy
from gateway.store import Store
from gateway.store.commits import Commit, Staged

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
    # One per decision, kept by digest: the signed receipt is re-issued on demand
    # (gateway/consent/receipts.py).
    receipts: list[KeptReceipt] = field(default_factory=list)
    # Signed receipts (JWTs) of records written before receipts were kept by digest: kept
    # as they were, so an upgraded deployment still hands them out.
    signed_receipts: list[str] = field(default_factory=list)
    # Set when the person withdrew everything from the shop: nothing is released, and the
    # next authorization shows the consent screen again, until the person decides anew.
    withdrawn_at: float = 0.0

    def consented(self, now: float) -> set[tuple[str, str]]:
        """The (purpose, field) pairs that may be released now."""
        return {(g.purpose, g.field) for g in self.grants if g.expires_at > now}

    def to_json(self) -> str:
        """The record as JSON, format 2 (Redis keeps it deflated: :meth:`to_stored`), compact
        because every person has one per shop: positional lists instead of named fields,
        and grants (refusals) given at the same time under the same terms written once with
        their (field, transform) pairs::

            {"v": 2, "c": client id, "p": policy version, "d": decided at,
             "g": [[purpose, retention days, legal basis, policy version, granted at,
                    expires at, [field, transform, field, transform, …]], …],
             "r": [[at, kind, [purpose, field, transform, …]], …],
             "k": [receipt (receipts.encode_receipt), …],
             "m": method, "s": [signed receipt, …], "w": withdrawn at}

        "m", "s" and "w" are left out at their defaults."""
        data: dict[str, Any] = {
            "v": RECORD_FORMAT, "c": self.client_id, "p": self.policy_version, "d": self.decided_at,
            "g": _runs(((g.purpose, g.retention_days, g.legal_basis, g.policy_version, g.granted_at,
                         g.expires_at), (g.field, g.transform)) for g in self.grants),
            "r": _runs(((r.at, r.kind), (r.purpose, r.field, r.transform)) for r in self.refusals),
            "k": [encode_receipt(r) for r in self.receipts],
        }
        if self.method != "consent_screen":
            data["m"] = self.method
        if self.signed_receipts:
            data["s"] = self.signed_receipts
        if self.withdrawn_at:
            data["w"] = self.withdrawn_at
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    def to_stored(self) -> str:
        """The value kept in Redis: :meth:`to_json` deflated (gateway/consent/deflate.py)."""
        return deflate(self.to_json())

    @classmethod
    def from_stored(cls, raw: bytes | str) -> ConsentRecord:
        """A record as Redis holds it: deflated (:meth:`to_stored`), or JSON of either format."""
        return cls.from_json(inflate(raw) if is_deflated(raw) else raw)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ConsentRecord:
        data = json.loads(raw)
        if "v" not in data:
            return cls._from_named_fields(data)
        if data["v"] != RECORD_FORMAT:
            raise ValueError(f"consent record of unknown format {data['v']!r}")
        return cls(
            client_id=data["c"], policy_version=data["p"], decided_at=data["d"],
            method=data.get("m", "consent_screen"),
            grants=[Grant(purpose, field_name, transform, retention, basis, version, granted, expires)
                    for (purpose, retention, basis, version, granted, expires), (field_name, transform)
                    in _rows(data["g"], 2)],
            refusals=[Refusal(purpose, field_name, transform, at, kind)
                      for (at, kind), (purpose, field_name, transform) in _rows(data["r"], 3)],
            receipts=[decode_receipt(r) for r in data["k"]],
            signed_receipts=list(data.get("s", [])),
            withdrawn_at=data.get("w", 0.0),
        )

    @classmethod
    def _from_named_fields(cls, data: dict[str, Any]) -> ConsentRecord:
        """A record written before format 2 (``dataclasses.asdict`` of the record, with the
        signed receipts themselves in "receipts"): still read, rewritten in format 2 at its
        next change."""
        return cls(
            client_id=data["client_id"], policy_version=data["policy_version"],
            decided_at=data["decided_at"], method=data.get("method", "consent_screen"),
            grants=[Grant(**g) for g in data["grants"]],
            refusals=[Refusal(**r) for r in data["refusals"]],
            signed_receipts=list(data.get("receipts", [])),
            withdrawn_at=data.get("withdrawn_at", 0.0),
        )


RECORD_FORMAT = 2


def _runs(rows: Iterable[tuple[tuple[Any, ...], tuple[Any, ...]]]) -> list[list[Any]]:
    """(head, body) rows as runs: consecutive rows with the same head become one
    ``[*head, [*body, *body, …]]``, so the order of the rows is kept exactly."""
    runs: list[list[Any]] = []
    last: tuple[Any, ...] | None = None
    for head, body in rows:
        if runs and head == last:
            runs[-1][-1].extend(body)
        else:
            runs.append([*head, list(body)])
            last = head
    return runs


def _rows(runs: Iterable[list[Any]], body_width: int) -> Iterator[tuple[list[Any], list[Any]]]:
    """The (head, body) rows of :func:`_runs`' output, in order."""
    for run in runs:
        head, bodies = run[:-1], run[-1]
        for start in range(0, len(bodies), body_width):
            yield head, bodies[start:start + body_width]


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


@dataclass(frozen=True, slots=True)
class ConsentState:
    """A consent record as read, with the grant generation read in the same transaction."""

    record: ConsentRecord | None
    generation: int | None  # None: no code was ever issued under this grant (or erased)
    seen_sha1: str  # of the stored record, '' if none: the commit's compare-and-set
    tokens_live: bool  # the shop's family index exists


Describe = Callable[[ConsentRecord, list[Grant]], Sequence[Staged]]
MAX_ATTEMPTS = 8


class ConcurrentChangeError(Exception):
    """The record kept changing under us (``MAX_ATTEMPTS`` compare-and-set failures)."""


class ConsentService:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _key(self, person_id: str, client_id: str) -> str:
        return self._store.keys.person_consent(person_id, client_id)

    def find(self, person_id: str, client_id: str) -> ConsentRecord | None:
        raw = self._store.get(self._key(person_id, client_id))
        return ConsentRecord.from_stored(raw) if raw is not None else None

    def state(self, person_id: str, client_id: str) -> ConsentState:
        """Record, generation and whether tokens exist, in one round trip (one transaction)."""
        keys = self._store.keys
        pipe = self._store.redis.pipeline(transaction=True)
        pipe.get(self._key(person_id, client_id))
        pipe.get(keys.person_grant(person_id, client_id))
        pipe.exists(keys.person_shop_families(person_id, client_id))
        raw, generation, families = cast(list[bytes | int | None], pipe.execute())
        return ConsentState(
            ConsentRecord.from_stored(cast(bytes, raw)) if raw is not None else None,
            int(cast(bytes, generation)) if generation is not None else None,
            hashlib.sha1(cast(bytes, raw)).hexdigest() if raw is not None else "",  # noqa: S324 - Redis's own sha1hex, a compare-and-set tag
            bool(families),
        )

    def erasure_keys(self, person_id: str, client_ids: Sequence[str]) -> list[str]:
        """Every key of the person's consents and grants (deleted by erasure)."""
        keys = self._store.keys
        return [k for c in client_ids
                for k in (keys.person_consent(person_id, c), keys.person_grant(person_id, c))]

    def _commit(self, person_id: str, state: ConsentState, record: ConsentRecord, *,
                end_generation: bool, events: Sequence[Staged],
                if_tokens_live: Staged | None = None) -> Commit:
        keys = self._store.keys
        return self._store.commits.change_record(
            person_id, record_key=self._key(person_id, record.client_id),
            grant_key=keys.person_grant(person_id, record.client_id),
            family_index=keys.person_shop_families(person_id, record.client_id),
            seen_sha1=state.seen_sha1, new_value=record.to_stored(), end_generation=end_generation,
            events=events, if_tokens_live=if_tokens_live)

    def decide(self, person_id: str, client_id: str, policy_version: int,
               asked: list[ConsentItem], granted: set[tuple[str, str]],
               method: str = "consent_screen",
               make_receipt: Callable[[list[Grant], int], KeptReceipt] | None = None,
               describe: Describe | None = None,
               ) -> tuple[ConsentRecord, list[Grant]]:
        """Record the person's answer to the items they were ``asked``: ``granted`` ones
        become grants, the others refusals; the receipt ``make_receipt`` gives for the new
        grants (by digest, see gateway/consent/receipts.py) is kept with the record, and
        ``describe`` gives the audit events committed with it. Returns the record and the
        new grants. Unticking something granted before is a narrowing: it ends the
        grant's generation like a withdrawal."""
        for _ in range(MAX_ATTEMPTS):
            state = self.state(person_id, client_id)
            now = int(time.time())
            record = state.record or ConsentRecord(client_id)
            before = record.consented(now)
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
            record.withdrawn_at = 0.0
            if make_receipt is not None:
                record.receipts.append(make_receipt(new_grants, now))
            narrowed = bool(before - record.consented(now))
            events = describe(record, new_grants) if describe is not None else ()
            if self._commit(person_id, state, record, end_generation=narrowed,
                            events=events) is not Commit.CONFLICT:
                return record, new_grants
        raise ConcurrentChangeError(f"consent of {client_id} kept changing")

    def withdraw(self, person_id: str, client_id: str, purpose: str | None = None,
                 field_name: str | None = None,
                 describe: Callable[[list[Grant]], tuple[Sequence[Staged], Staged | None]] | None = None,
                 ) -> list[Grant]:
        """Withdraw grants (all of a shop, one purpose, or one field of a purpose) and end
        the grant's generation, so no code or token issued before works any more. Returns
        what was withdrawn (nothing changes when there was nothing to withdraw; a withdrawal
        of everything always ends the grant while anything may be live). ``describe`` gives
        the audit events (and one staged only if tokens were live)."""
        everything = purpose is None and field_name is None
        for _ in range(MAX_ATTEMPTS):
            state = self.state(person_id, client_id)
            now = int(time.time())
            record = state.record
            if record is None and not (everything and state.tokens_live):
                return []
            record = record or ConsentRecord(client_id, decided_at=time.time())

            def matches(grant: Grant) -> bool:
                return (purpose in (None, grant.purpose)) and (field_name in (None, grant.field))

            withdrawn = [g for g in record.grants if matches(g)]
            if not withdrawn and not (everything and (not record.withdrawn_at or state.tokens_live)):
                return []
            record.grants = [g for g in record.grants if not matches(g)]
            record.refusals += [Refusal(g.purpose, g.field, g.transform, now, "withdrawn")
                                for g in withdrawn]
            if everything:
                record.withdrawn_at = time.time()
            events, if_live = describe(withdrawn) if describe is not None else ((), None)
            if self._commit(person_id, state, record, end_generation=True, events=events,
                            if_tokens_live=if_live) is not Commit.CONFLICT:
                return withdrawn
        raise ConcurrentChangeError(f"consent of {client_id} kept changing")
