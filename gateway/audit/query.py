"""Querying the log: filters, cursor pages, and streamed JSON Lines / CSV exports.

The append script lists every index in a few Redis lists — one per person, shop, action,
field name and outcome — and records, per UTC hour, the first and last index of events
stamped in that hour. Lists only ever grow at the right, so each is sorted; a page finds its
start by binary search inside Redis (one round trip) and reads forward.

A query drives from its most selective list (or the plain index range when that is smaller)
and re-checks every candidate against the whole filter, so the indexes only decide speed,
never the answer. A time range becomes an index range through the hour table: every event
stamped in an hour lies between that hour's first and last index, whatever the clocks of the
processes that wrote them. Cursors are log indexes: stable while the log grows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from gateway.audit.boundary import archived_size
from gateway.audit.errors import AuditIntegrityError
from gateway.audit.events import AuditEvent, NonCanonicalEvent, decode_event, parse_timestamp

if TYPE_CHECKING:
    from gateway.audit.log import AuditLog

_LIST_FROM = """
local lo, hi = 0, redis.call('LLEN', KEYS[1])
local target = tonumber(ARGV[1])
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if tonumber(redis.call('LINDEX', KEYS[1], mid)) < target then lo = mid + 1 else hi = mid end
end
return redis.call('LRANGE', KEYS[1], lo, lo + tonumber(ARGV[2]) - 1)
"""
FETCH_BATCH = 500
_HOURS_PER_READ = 1000


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which events to return. ``since`` is inclusive, ``until`` exclusive (event time format)."""

    person: str | None = None
    shop: str | None = None
    action: str | None = None
    field: str | None = None
    outcome: str | None = None
    since: str | None = None
    until: str | None = None

    def __post_init__(self) -> None:
        for bound in (self.since, self.until):
            if bound is not None:
                parse_timestamp(bound)  # ValueError for anything else

    def dimensions(self) -> list[tuple[str, str]]:
        wanted = [(f.name, getattr(self, f.name)) for f in fields(self) if f.name not in ("since", "until")]
        return [(name, value) for name, value in wanted if value is not None]

    def matches(self, event: AuditEvent) -> bool:
        return self.matches_data(vars(event))

    def matches_data(self, data: Mapping[str, Any]) -> bool:
        """The filter over an event's fields (a decoded event, or its parsed JSON)."""
        time = str(data.get("time"))  # fixed-width UTC text: sorts as time does
        return (
            (self.person is None or data.get("person") == self.person)
            and (self.shop is None or data.get("shop") == self.shop)
            and (self.action is None or data.get("action") == self.action)
            and (self.field is None or self.field in data.get("fields", ()))
            and (self.outcome is None or data.get("outcome") == self.outcome)
            and (self.since is None or time >= self.since)
            and (self.until is None or time < self.until)
        )


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    index: int
    event: AuditEvent
    shard: int = 0  # the shard whose log ``index`` counts in


@dataclass(frozen=True, slots=True)
class Page:
    items: list[LoggedEvent]
    next_cursor: int | None  # None: nothing further matches


class AuditQuery:
    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._list_from = log.store.redis.register_script(_LIST_FROM)

    def _hour_bounds(self, since: str | None, until: str | None, size: int) -> tuple[int, int]:
        """An index range holding every event stamped in [since, until)."""
        if since is None and until is None:
            return 0, size - 1
        start = parse_timestamp(since) if since else None
        end = parse_timestamp(until) - timedelta(milliseconds=1) if until else None
        if start is None or end is None:
            # Open on one side: bound only that side by the hours we know of.
            known = [f.decode().split(":")[0] for f in
                     cast(list[bytes], self.log.store.redis.hkeys(self.log.shard_keys.audit_hours()))]
            hours = sorted({h for h in known if (start is None or h >= _hour(start))
                            and (end is None or h <= _hour(end))})
        else:
            hours = []
            moment = start.replace(minute=0, second=0, microsecond=0)
            while moment <= end:
                hours.append(_hour(moment))
                moment += timedelta(hours=1)
        firsts: list[int] = []
        lasts: list[int] = []
        pipe = self.log.store.redis.pipeline(transaction=False)
        for i in range(0, len(hours), _HOURS_PER_READ):
            chunk = hours[i : i + _HOURS_PER_READ]
            fields_wanted = [f"{hour}:{edge}" for hour in chunk for edge in ("first", "last")]
            pipe.hmget(self.log.shard_keys.audit_hours(), fields_wanted)
        for values in cast(list[list[bytes | None]], pipe.execute()):
            firsts += [int(v) for v in values[0::2] if v is not None]
            lasts += [int(v) for v in values[1::2] if v is not None]
        return (min(firsts), max(lasts)) if firsts else (1, 0)

    def _cold_boundary(self) -> int:
        """The cold tier's boundary, read now (0 without a cold tier: no round trip)."""
        return self.log.boundary.refresh() if self.log.cold is not None else 0

    def _candidates(self, flt: AuditFilter, cursor: int, hi: int, count: int, cold: int) -> list[int]:
        """Up to ``count`` indexes ``>= cursor`` and ``<= hi`` that might match, ascending
        (below ``cold`` from the cold tier's chunk indexes, above it from Redis' lists)."""
        if cursor < cold:
            in_cold = self._cold_candidates(flt, cursor, min(hi, cold - 1), count)
            if in_cold:
                return in_cold
            cursor = cold
        redis_client, keys = self.log.store.redis, self.log.shard_keys
        dims = flt.dimensions()
        if dims:
            pipe = redis_client.pipeline(transaction=False)
            for name, value in dims:
                pipe.llen(keys.audit_index(name, value))
            lengths = cast(list[int], pipe.execute())
            length, (name, value) = min(zip(lengths, dims, strict=True))
            if length < hi - cursor + 1:
                found = cast(list[bytes], self._list_from(keys=[keys.audit_index(name, value)],
                                                          args=[cursor, count]))
                return [i for i in map(int, found) if i <= hi]
        return list(range(cursor, min(hi + 1, cursor + count)))

    def _cold_candidates(self, flt: AuditFilter, cursor: int, hi: int, count: int) -> list[int]:
        """Like :meth:`_candidates` inside the cold tier: chunk by chunk until one has any."""
        indexes, width = self.log.cold_indexes, self.log.chunk_entries
        if indexes is None:
            return []
        chunk = cursor // width
        while chunk * width <= hi:
            positions = indexes.positions(chunk, flt.dimensions())
            if positions is None:
                return list(range(cursor, min(hi + 1, cursor + count)))
            found = [i for i in positions if cursor <= i <= hi][:count]
            if found:
                return found
            chunk += 1
        return []

    def page(self, flt: AuditFilter, cursor: int = 0, limit: int = 100, max_scan: int = 10_000) -> Page:
        """Up to ``limit`` matching events from index ``cursor`` on, looking at no more than
        ``max_scan`` candidates (a page may be short; follow ``next_cursor``)."""
        # Entries moved to the cold tier meanwhile are gone from the Redis lists the page read:
        # read it again until no move overlapped (each move is a chunk, so this ends quickly).
        while True:
            cold = self._cold_boundary()
            page = self._page(flt, cursor, limit, max_scan, cold)
            if self._cold_boundary() == cold:
                return page

    def _page(self, flt: AuditFilter, cursor: int, limit: int, max_scan: int, cold: int) -> Page:
        size = self.log.size()
        lo, hi = self._hour_bounds(flt.since, flt.until, size)
        lo = max(lo, archived_size(self.log))  # older events live in archive files
        position, items, scanned = max(cursor, lo), list[LoggedEvent](), 0
        step = limit  # read what the page needs, scaled by how many candidates matched so far
        while position <= hi and len(items) < limit and scanned < max_scan:
            batch = self._candidates(flt, position, hi, min(FETCH_BATCH, max_scan - scanned, step), cold)
            if not batch:
                return Page(items, None)
            matched = self._load_matching(flt, batch)
            for logged in matched[: limit - len(items)]:
                items.append(logged)
                position = logged.index + 1
            if len(items) < limit:
                position = batch[-1] + 1
            scanned += len(batch)
            ratio = max(len(matched) / len(batch), 0.05)
            step = math.ceil((limit - len(items)) / ratio) + 1
        return Page(items, position if position <= hi else None)

    def _load_matching(self, flt: AuditFilter, indexes: list[int]) -> list[LoggedEvent]:
        """The candidates that match, decoded. Only matches go through full validation."""
        loaded = []
        for index, entry in zip(indexes, self.log.read_entries(indexes), strict=True):
            if isinstance(entry, str):
                raise AuditIntegrityError(index, entry)
            try:
                data = json.loads(entry.event)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                if not flt.matches_data(data):
                    continue
                loaded.append(LoggedEvent(index, decode_event(entry.event), self.log.shard))
            except (NonCanonicalEvent, ValueError) as error:
                raise AuditIntegrityError(index, f"stored event is unreadable ({error})") from None
        return loaded

    def event(self, index: int) -> LoggedEvent | None:
        """One event by index, or None outside the live log (archived or not yet written)."""
        if not archived_size(self.log) <= index < self.log.size():
            return None
        found = self._load_matching(AuditFilter(), [index])
        return found[0] if found else None

    def latest_for_person(self, person: str, limit: int = 50) -> list[LoggedEvent]:
        """A person's most recent events, newest first (their access history page): the last
        ``limit`` entries of the person's index, one read."""
        redis_client, keys = self.log.store.redis, self.log.shard_keys
        cold = self._cold_boundary()
        found = cast(list[bytes], redis_client.lrange(keys.audit_index("person", person), -limit, -1))
        archived = archived_size(self.log)
        indexes = sorted((int(i) for i in found if int(i) >= max(archived, cold)), reverse=True)
        chunk, width = (cold - 1) // self.log.chunk_entries, self.log.chunk_entries
        while len(indexes) < limit and self.log.cold_indexes is not None and chunk >= 0 \
                and (chunk + 1) * width > archived:  # older ones from the cold tier, newest first
            older = self.log.cold_indexes.positions(chunk, [("person", person)]) or []
            indexes.extend(sorted((i for i in older if archived <= i < cold), reverse=True))
            chunk -= 1
        if self._cold_boundary() != cold:  # moved meanwhile: the Redis list was cut, read again
            return self.latest_for_person(person, limit)
        indexes = indexes[:limit]
        return self._load_matching(AuditFilter(person=person), indexes) if indexes else []

    def events(self, flt: AuditFilter, cursor: int = 0) -> Iterator[LoggedEvent]:
        """Every matching event, page by page (a generator: nothing is built in memory)."""
        next_cursor: int | None = cursor
        while next_cursor is not None:
            page = self.page(flt, next_cursor, limit=FETCH_BATCH)
            yield from page.items
            next_cursor = page.next_cursor


def _hour(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H")  # the same buckets as log.hour_bucket
