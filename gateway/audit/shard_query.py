"""Queries over every shard of the log: one page, one cursor, one stream.

Each shard answers the filter from its own indexes (:class:`AuditQuery`); a page merges the
shards' pages by event time (then shard), keeping each shard's own order, and takes the first
``limit``. A filter naming a person asks only that person's shard.

With one shard the cursor is the log index, as it always was. With K > 1 it names the next
index to look at in every shard, ``.``-separated, ``-`` for a shard with nothing further
(``12.-.40``); ``0`` starts every shard at its beginning. Cursors stay valid while the log grows.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.audit.query import FETCH_BATCH, AuditFilter, AuditQuery, LoggedEvent, Page
from gateway.audit.shards import shard_of_person

_SEPARATOR = "."
_DONE = "-"


@dataclass(frozen=True, slots=True)
class ShardedPage:
    items: list[LoggedEvent]
    next_cursor: int | str | None  # None: nothing further matches


class ShardedQuery:
    def __init__(self, queries: list[AuditQuery]) -> None:
        self.queries = queries

    @property
    def shards(self) -> int:
        return len(self.queries)

    def shard_of_person(self, person: str) -> int:
        return shard_of_person(person, self.shards)

    def parse_cursor(self, cursor: int | str) -> list[int | None]:
        """Each shard's next index (``None``: done); ValueError for anything else."""
        text = str(cursor)
        parts = text.split(_SEPARATOR) if _SEPARATOR in text else [text] * self.shards
        if len(parts) != self.shards:
            raise ValueError(f"a cursor names a position in each of the {self.shards} shards")
        positions = [None if part == _DONE else int(part) for part in parts]
        if any(p is not None and p < 0 for p in positions):
            raise ValueError("cursor positions are log indexes, not negative")
        return positions

    def _cursor(self, positions: list[int | None]) -> int | str | None:
        if all(p is None for p in positions):
            return None
        if self.shards == 1:
            return positions[0]
        return _SEPARATOR.join(_DONE if p is None else str(p) for p in positions)

    def page(self, flt: AuditFilter, cursor: int | str = 0, limit: int = 100,
             max_scan: int = 10_000) -> ShardedPage:
        """Up to ``limit`` matching events from ``cursor`` on, looking at no more than
        ``max_scan`` candidates in all (a page may be short; follow ``next_cursor``)."""
        positions = self.parse_cursor(cursor)
        if flt.person is not None:
            mine = self.shard_of_person(flt.person)
            positions = [p if shard == mine else None for shard, p in enumerate(positions)]
        starts = {shard: p for shard, p in enumerate(positions) if p is not None}
        pages = {shard: self.queries[shard].page(flt, start, limit, max(1, max_scan // len(starts)))
                 for shard, start in starts.items()}
        merged = heapq.merge(*([(item.event.time, shard, item) for item in page.items]
                               for shard, page in pages.items()))
        items = [item for _, _, item in (next(merged) for _ in range(min(limit, _count(pages))))]
        for shard, page in pages.items():
            taken = sum(1 for item in items if item.shard == shard)
            positions[shard] = page.next_cursor if taken == len(page.items) else page.items[taken].index
        return ShardedPage(items, self._cursor(positions))

    def events(self, flt: AuditFilter, cursor: int | str = 0) -> Iterator[LoggedEvent]:
        """Every matching event of every shard, page by page (a generator)."""
        next_cursor: int | str | None = cursor
        while next_cursor is not None:
            page = self.page(flt, next_cursor, limit=FETCH_BATCH)
            yield from page.items
            next_cursor = page.next_cursor

    def event(self, index: int, shard: int = 0) -> LoggedEvent | None:
        """One event by shard and index, or None outside that shard's live log."""
        if not 0 <= shard < self.shards:
            return None
        return self.queries[shard].event(index)

    def latest_for_person(self, person: str, limit: int = 50) -> list[LoggedEvent]:
        """A person's most recent events, newest first: all in the person's shard."""
        return self.queries[self.shard_of_person(person)].latest_for_person(person, limit)


def _count(pages: dict[int, Page]) -> int:
    return sum(len(page.items) for page in pages.values())
