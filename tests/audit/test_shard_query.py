"""Queries and exports across shards: one page, one cursor, every match exactly once."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit import AuditEvent, AuditFilter, AuditService, export_csv, export_jsonl
from tests.audit.conftest import SHARDS
from tests.audit.factories import person_event

EVENTS = 90
FILTERS = [AuditFilter(), AuditFilter(shop="shop-1"), AuditFilter(person="person-7"),
           AuditFilter(since="2025-03-01T08:00:30.000Z", until="2025-03-01T08:01:10.000Z"),
           AuditFilter(action="token_issued")]


def events() -> list[AuditEvent]:
    return [person_event(n, action="token_issued" if n % 11 == 0 else "userinfo_read") for n in range(EVENTS)]


def fill(service: AuditService) -> None:
    if sum(shard.log.size() for shard in service.shards) == 0:  # once per test, not per example
        for event in events():
            service.record(event)


def expected(flt: AuditFilter) -> list[str]:
    return sorted(event.request_id or "" for event in events() if flt.matches(event))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=st.sampled_from(FILTERS), limit=st.integers(min_value=1, max_value=40))
def test_pages_across_shards_return_every_match_once(sharded: AuditService, flt: AuditFilter,
                                                     limit: int) -> None:
    fill(sharded)
    seen: list[tuple[int, int]] = []
    request_ids: list[str] = []
    cursor: int | str | None = 0
    while cursor is not None:
        page = sharded.query.page(flt, cursor, limit=limit)
        assert len(page.items) <= limit
        seen += [(item.shard, item.index) for item in page.items]
        request_ids += [item.event.request_id or "" for item in page.items]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen))
    assert sorted(request_ids) == expected(flt)


def test_a_person_filter_reads_only_the_persons_shard(sharded: AuditService) -> None:
    fill(sharded)
    page = sharded.query.page(AuditFilter(person="person-7"), limit=100)
    mine = sharded.shard_of_person("person-7")
    assert page.items and {item.shard for item in page.items} == {mine}
    assert page.next_cursor is None


def test_a_cursor_names_a_position_in_every_shard(sharded: AuditService) -> None:
    fill(sharded)
    page = sharded.query.page(AuditFilter(), limit=10)
    assert isinstance(page.next_cursor, str) and len(page.next_cursor.split(".")) == SHARDS
    for bad in ("1.2", "-1.0.0", "a.b.c"):
        with pytest.raises(ValueError):
            sharded.query.page(AuditFilter(), bad)


def test_exports_across_shards_name_each_events_shard(sharded: AuditService) -> None:
    fill(sharded)
    rows = [json.loads(line) for line in export_jsonl(sharded.query, AuditFilter(shop="shop-2"))]
    assert sorted(row["request_id"] for row in rows) == expected(AuditFilter(shop="shop-2"))
    for row in rows:
        found = sharded.query.event(row["index"], row["shard"])
        assert found is not None and found.event.request_id == row["request_id"]
    table = list(csv.reader(io.StringIO("".join(export_csv(sharded.query, AuditFilter(shop="shop-2"))))))
    assert table[0][:2] == ["shard", "index"] and len(table) == len(rows) + 1
    assert {(int(r[0]), int(r[1])) for r in table[1:]} == {(row["shard"], row["index"]) for row in rows}
