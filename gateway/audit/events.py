"""Audit events and their one canonical byte form.

An event records *that* something happened — who acted, on whose pseudonymous id, for which
shop, which field *names*, under which purpose and policy version, with what outcome — and
never a value (PIPL art. 55-56 asks for a record of every provision; the record itself must
not become a second copy of the data). The model forbids unknown keys, and every string is
held to a narrow identifier pattern, so a phone number or an e-mail address cannot be
smuggled in as a "field name" or an id.

The canonical encoding (:func:`canonical_json`) is the Merkle leaf (RFC 9162 §2.1.1): UTF-8,
keys sorted, no insignificant white space, non-ASCII kept as is. Every key is always present
(absent values are ``null``), so one event has exactly one encoding. Changing the encoding
needs a new ``version``. For this schema (ASCII keys, the only number a small integer) the
output coincides with the JSON Canonicalization Scheme of RFC 8785.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from gateway.audit.errors import AuditError

FORMAT_VERSION: Literal[1] = 1

Action = Literal[
    "sign_in",
    "identity_linked",
    "consent_granted",
    "consent_withdrawn",
    "code_issued",
    "token_issued",
    "token_refreshed",
    "token_revoked",
    "token_introspected",
    "userinfo_read",
    "profile_exported",
    "person_erased",
    "key_rotated",
    "policy_loaded",
    "staff_query",
    "staff_export",
    "log_epoch_started",
]
ActorType = Literal["shop", "person", "staff", "system"]
Outcome = Literal["success", "denied", "error"]

ACTIONS: tuple[str, ...] = get_args(Action)
ACTOR_TYPES: tuple[str, ...] = get_args(ActorType)
OUTCOMES: tuple[str, ...] = get_args(Outcome)

# Ids (pseudonyms, client ids, request ids, policy versions) start with a letter or digit, so
# that no CSV cell of an export can start with a spreadsheet formula character (=, +, -, @).
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:=+/-]{0,127}$"
# Field and purpose names are catalogue identifiers: lower case, starting with a letter.
_NAME_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
# ISO-8601, UTC, millisecond precision, fixed width: sorts as text in time order.
_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

# A release may serve several purposes at once: their ids, sorted, joined by "+".
_PURPOSES_PATTERN = r"^[a-z][a-z0-9_-]{0,39}(\+[a-z][a-z0-9_-]{0,39}){0,15}$"

def is_identifier(value: str) -> bool:
    """Whether ``value`` may stand in an event's id fields (person, shop, actor)."""
    return re.fullmatch(_ID_PATTERN[1:-1], value) is not None


def is_name(value: str) -> bool:
    """Whether ``value`` may stand in an event's field names."""
    return re.fullmatch(_NAME_PATTERN[1:-1], value) is not None


Identifier = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
Name = Annotated[str, StringConstraints(pattern=_NAME_PATTERN)]
Purposes = Annotated[str, StringConstraints(pattern=_PURPOSES_PATTERN)]
Timestamp = Annotated[str, StringConstraints(pattern=_TIME_PATTERN)]

_NAME_RE = re.compile(_NAME_PATTERN)
_TIME_RE = re.compile(_TIME_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_timestamp(when: datetime | None = None) -> str:
    """``when`` (default: now) as the event time format, e.g. ``2025-03-01T08:15:30.125Z``."""
    moment = (when or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """The aware UTC datetime of an event time (raises ``ValueError`` if malformed)."""
    if not _TIME_RE.match(text):
        raise ValueError(f"not an audit time: {text!r}")
    return datetime.fromisoformat(text)  # the pattern leaves only real-date errors to this


def timestamp_ms(text: str) -> int:
    """Milliseconds since the Unix epoch of an event time."""
    return (parse_timestamp(text) - _EPOCH) // timedelta(milliseconds=1)


class AuditEvent(BaseModel):
    """One audited action. Frozen, strict (no coercion), and closed (``extra="forbid"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal[1] = FORMAT_VERSION
    time: Timestamp = Field(default_factory=utc_timestamp)
    actor_type: ActorType
    actor_id: Identifier
    action: Action
    person: Identifier | None = None
    shop: Identifier | None = None
    fields: tuple[Name, ...] = ()
    purpose: Purposes | None = None
    policy_version: Identifier | None = None
    outcome: Outcome = "success"
    request_id: Identifier | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _field_names_sorted_once(cls, value: Any) -> Any:
        # One set of names has one encoding: sorted, without repeats.
        if isinstance(value, list | tuple | set | frozenset):
            if not all(isinstance(name, str) and _NAME_RE.match(name) for name in value):
                return value  # let the item pattern report the bad name
            return tuple(sorted(set(value)))
        return value

    @field_validator("time")
    @classmethod
    def _time_is_a_real_moment(cls, value: str) -> str:
        parse_timestamp(value)  # rejects 2025-02-30 and the like
        return value

    def time_ms(self) -> int:
        return timestamp_ms(self.time)


def canonical_json(event: AuditEvent) -> bytes:
    """The event's canonical bytes: the Merkle leaf data (see docs/audit.md, "Canonical form")."""
    return json.dumps(
        event.model_dump(mode="json"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


class NonCanonicalEvent(AuditError):
    """Stored bytes are not the canonical encoding of a valid event."""


def decode_event(data: bytes) -> AuditEvent:
    """Parse stored event bytes, insisting that they are exactly the canonical encoding.

    Re-encoding and comparing rejects duplicate keys, extra white space, unsorted keys or field
    names and missing keys, any of which would let two byte strings stand for one event.
    """
    try:
        event = AuditEvent.model_validate_json(data)
    except ValidationError as error:
        raise NonCanonicalEvent(f"not a valid audit event ({error.error_count()} errors)") from None
    if canonical_json(event) != data:
        raise NonCanonicalEvent("not in canonical form")
    return event
