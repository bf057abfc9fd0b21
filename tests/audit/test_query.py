"""Queries by person, shop, action, field, outcome and time, in cursor pages and streamed exports."""

from __future__ import annotations

import csv
import io
import json
import types

import pytest

from gateway.audit import AuditFilter, AuditLog, AuditQuery, export_csv, export_jsonl
from tests.audit.factories import make_event

EVENTS = 60


@pytest.fixture
def query(audit_log: AuditLog) -> AuditQuery:
    for n in range(EVENTS):
        audit_log.append_event(make_event(
            n * 100,  # n * 100 seconds apart: the log spans about 1.7 hours
            action="token_revoked" if n % 10 == 0 else "userinfo_read",
            outcome="denied" if n % 15 == 7 else "success",
            fields=["birthdate"] if n % 4 == 0 else ["nickname", "phone"],
            request_id=f"q-{n}",
        ))
    return AuditQuery(audit_log)


def expected(flt: AuditFilter) -> list[int]:
    """The brute-force answer: re-create every event and filter it in Python."""
    query_events = [
        make_event(n * 100, action="token_revoked" if n % 10 == 0 else "userinfo_read",
                   outcome="denied" if n % 15 == 7 else "success",
                   fields=["birthdate"] if n % 4 == 0 else ["nickname", "phone"], request_id=f"q-{n}")
        for n in range(EVENTS)
    ]
    return [n for n, event in enumerate(query_events) if flt.matches(event)]


def indexes(query: AuditQuery, flt: AuditFilter) -> list[int]:
    return [logged.index for logged in query.events(flt)]


@pytest.mark.parametrize("flt", [
    AuditFilter(),
    AuditFilter(person="p-3"),
    AuditFilter(shop="shop-1"),
    AuditFilter(action="token_revoked"),
    AuditFilter(field="birthdate"),
    AuditFilter(outcome="denied"),
    AuditFilter(person="p-2", field="phone"),
    AuditFilter(action="token_revoked", shop="shop-0", outcome="success"),
    AuditFilter(since="2025-03-01T08:30:00.000Z"),
    AuditFilter(until="2025-03-01T08:30:00.000Z"),
    AuditFilter(since="2025-03-01T08:50:00.000Z", until="2025-03-01T09:20:00.000Z"),
    AuditFilter(person="p-1", since="2025-03-01T09:00:00.000Z"),
    AuditFilter(person="nobody"),
    AuditFilter(since="2030-01-01T00:00:00.000Z"),
])
def test_filters_return_exactly_the_matching_events_in_log_order(query: AuditQuery, flt: AuditFilter) -> None:
    assert indexes(query, flt) == expected(flt)


def test_pages_follow_the_cursor_without_gaps_or_repeats(query: AuditQuery) -> None:
    flt = AuditFilter(field="phone")
    seen: list[int] = []
    cursor: int | None = 0
    while cursor is not None:
        page = query.page(flt, cursor, limit=7)
        assert len(page.items) <= 7
        seen += [logged.index for logged in page.items]
        cursor = page.next_cursor
    assert seen == expected(flt)


def test_a_page_scans_no_more_than_it_is_allowed(query: AuditQuery) -> None:
    page = query.page(AuditFilter(outcome="denied", shop="shop-2"), 0, limit=100, max_scan=2)
    assert page.next_cursor is not None  # short page: the caller follows the cursor


def test_the_cursor_stays_valid_while_the_log_grows(query: AuditQuery, audit_log: AuditLog) -> None:
    first = query.page(AuditFilter(person="p-0"), 0, limit=3)
    audit_log.append_event(make_event(7, person="p-0", request_id="late"))
    rest = list(query.events(AuditFilter(person="p-0"), first.next_cursor or 0))
    assert [logged.event.request_id for logged in rest][-1] == "late"
    assert {logged.index for logged in first.items}.isdisjoint(logged.index for logged in rest)


def test_a_malformed_time_bound_is_refused() -> None:
    with pytest.raises(ValueError):
        AuditFilter(since="yesterday")


def test_jsonl_export_streams_one_event_per_line(query: AuditQuery) -> None:
    stream = export_jsonl(query, AuditFilter(person="p-4"))
    assert isinstance(stream, types.GeneratorType)
    rows = [json.loads(line) for line in stream]
    assert [row["index"] for row in rows] == expected(AuditFilter(person="p-4"))
    assert rows[0]["person"] == "p-4" and isinstance(rows[0]["fields"], list)


def test_csv_export_streams_a_header_then_one_row_per_event(query: AuditQuery) -> None:
    stream = export_csv(query, AuditFilter(action="token_revoked"))
    assert isinstance(stream, types.GeneratorType)
    rows = list(csv.DictReader(io.StringIO("".join(stream))))
    assert [int(row["index"]) for row in rows] == expected(AuditFilter(action="token_revoked"))
    assert rows[0]["fields"] == "birthdate" and rows[0]["purpose"] == "delivery_contact"
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())
