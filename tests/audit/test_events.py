"""Audit events hold names and pseudonymous ids, never values, and have one canonical form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.audit import ACTIONS, AuditEvent, canonical_json, decode_event
from gateway.audit.events import NonCanonicalEvent, parse_timestamp, timestamp_ms, utc_timestamp
from tests.audit.factories import make_event


def test_canonical_json_sorts_keys_without_whitespace_and_lists_every_key() -> None:
    data = canonical_json(make_event(1))
    text = data.decode()
    assert text.startswith('{"action":"userinfo_read","actor_id":"shop-1","actor_type":"shop",')
    assert " " not in text and "\n" not in text
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert set(json.loads(text)) == set(AuditEvent.model_fields)


def test_absent_values_are_encoded_as_null() -> None:
    event = AuditEvent(time="2025-01-01T00:00:00.000Z", actor_type="system", actor_id="gateway",
                       action="key_rotated")
    assert canonical_json(event) == (
        b'{"action":"key_rotated","actor_id":"gateway","actor_type":"system","fields":[],'
        b'"outcome":"success","person":null,"policy_version":null,"purpose":null,'
        b'"request_id":null,"shop":null,"time":"2025-01-01T00:00:00.000Z","version":1}'
    )


def test_field_names_are_sorted_and_deduplicated() -> None:
    event = make_event(fields=["phone", "email", "phone"])
    assert event.fields == ("email", "phone")


def test_extra_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        make_event(phone_number="13812345678")


@pytest.mark.parametrize("field, value", [
    ("fields", ["13812345678"]),          # a value where a field name belongs
    ("fields", ["li.lei@example.com"]),
    ("person", "li lei"),                 # spaces: free text, not an id
    ("actor_id", "=HYPERLINK(\"x\")"),    # would be a formula in a spreadsheet
    ("purpose", "Because I said so"),
    ("request_id", ""),
])
def test_values_that_are_not_identifiers_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        make_event(0, **{field: value})


def test_unknown_action_outcome_or_actor_type_is_refused() -> None:
    for name, value in (("action", "profile_sold"), ("outcome", "maybe"), ("actor_type", "robot")):
        with pytest.raises(ValidationError):
            make_event(0, **{name: value})


def test_time_must_be_utc_with_milliseconds_and_real() -> None:
    for bad in ("2025-03-01T08:00:00Z", "2025-03-01T08:00:00.000+08:00", "2025-02-30T08:00:00.000Z"):
        with pytest.raises(ValidationError):
            make_event(time=bad)


def test_default_time_is_now_in_the_event_format() -> None:
    event = AuditEvent(actor_type="system", actor_id="gateway", action="policy_loaded")
    assert parse_timestamp(event.time) is not None
    assert timestamp_ms(utc_timestamp()) - event.time_ms() < 5000


def test_events_are_immutable() -> None:
    event = make_event()
    with pytest.raises(ValidationError):
        event.person = "someone-else"  # type: ignore[misc]


def test_decode_returns_the_same_event() -> None:
    event = make_event(5)
    assert decode_event(canonical_json(event)) == event


@pytest.mark.parametrize("mangle", [
    lambda t: t.replace('","', '", "', 1),                           # white space
    lambda t: t.replace('"fields":["nickname","phone"]', '"fields":["phone","nickname"]'),
    lambda t: t.replace('{"action"', '{"version":1,"action"', 1),   # duplicate key
    lambda t: t.replace(',"version":1', ""),                         # missing key
])
def test_decode_refuses_anything_but_the_canonical_bytes(mangle: object) -> None:
    text = canonical_json(make_event(5)).decode()
    assert callable(mangle)
    with pytest.raises(NonCanonicalEvent):
        decode_event(mangle(text).encode())


@settings(max_examples=200, deadline=None)
@given(action=st.sampled_from(ACTIONS), n=st.integers(0, 10_000),
       names=st.lists(st.from_regex(r"^[a-z][a-z0-9_]{0,10}$", fullmatch=True), max_size=5))
def test_canonical_encoding_round_trips(action: str, n: int, names: list[str]) -> None:
    event = make_event(n, action=action, fields=names)
    data = canonical_json(event)
    assert decode_event(data) == event
    assert canonical_json(decode_event(data)) == data
