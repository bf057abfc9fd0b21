"""Moving the signed past of the log to the cold tier, so Redis holds only a bounded tail.

Redis memory for the audit log would otherwise grow with history (600-800 bytes per event,
docs/scaling.md). :class:`Tiering` keeps the newest ``hot_entries`` entries in Redis and moves
older ones, a chunk of ``chunk_entries`` at a time, to the cold store (gateway/audit/cold.py):
entry bundles, full hash tiles, the chunk's query index and its checkpoint notes. A chunk moves
only once it is sealed (every entry checked: MAC, chain) and covered by a signed checkpoint,
so the cold tier only ever receives what a signature already commits to.

The order of the steps is what makes it safe under crashes and concurrent gateways:

1. write every object of the chunk and make it durable (files fsynced; writing the same bytes
   again is a no-op, so a second mover or a retry after a crash does no harm);
2. move the boundary ``{audit}:cold`` from ``c`` to ``c + chunk`` with a compare-and-set, so
   it moves once, and only over a chunk whose objects exist;
3. clear Redis of what the cold tier now holds: the records, the Redis tile keys wholly
   below the boundary, the chunk's positions in the query lists, its checkpoint notes. Every
   step is idempotent, and ``{audit}:cold-cleaned`` records that it finished: a mover that
   dies between 2 and 3 leaves the clearing to the next pass, which redoes it from the cold
   objects. Readers that saw the old boundary find the Redis copy gone and re-read the
   boundary (gateway/audit/tiered.py), so no reader ever sees a gap.

It runs in the checkpoint thread while holding the shard's checkpoint lock, after signing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from gateway.audit.boundary import archived_size
from gateway.audit.cold import (
    ChunkIndex,
    ShardObjects,
    decode_bundle,
    encode_bundle,
    encode_hash_tile,
    index_key,
)
from gateway.audit.errors import AuditError, AuditIntegrityError
from gateway.audit.events import NonCanonicalEvent, decode_event
from gateway.audit.log import index_dimensions
from gateway.audit.merkle import leaf_hash
from gateway.audit.records import HEADER_SIZE
from gateway.store.scripts import LuaScript

if TYPE_CHECKING:
    from gateway.audit.checkpointer import Checkpointer
    from gateway.audit.cold import ColdStore
    from gateway.audit.log import AuditLog

log = logging.getLogger(__name__)

_BATCH = 2048
_ADVANCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current ~= tonumber(ARGV[1]) then return current end
redis.call('SET', KEYS[1], ARGV[2])
return tonumber(ARGV[2])
"""
# Drop the leading positions below ARGV[1] from each ascending list (idempotent: a second run
# finds nothing below the boundary). Binary search, then one LTRIM per list.
_TRIM_BELOW = """
local boundary = tonumber(ARGV[1])
for k = 1, #KEYS do
  local lo, hi = 0, redis.call('LLEN', KEYS[k])
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(redis.call('LINDEX', KEYS[k], mid)) < boundary then lo = mid + 1 else hi = mid end
  end
  if lo > 0 then redis.call('LTRIM', KEYS[k], lo, -1) end
end
return #KEYS
"""
_TRIM_KEYS = 256
_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return current
"""


@dataclass(frozen=True, slots=True)
class Moved:
    shard: int
    start: int
    stop: int


class Tiering:
    """Moves one shard's sealed, signed past to ``log.cold``; keeps ``hot_entries`` in Redis."""

    def __init__(self, log: AuditLog, checkpointer: Checkpointer, hot_entries: int,
                 combined: bool = False) -> None:
        if log.cold is None:
            raise ValueError("tiering needs a cold store")
        self.log = log
        self.cold: ColdStore = log.cold
        self.checkpointer = checkpointer
        self.hot_entries = hot_entries
        self.chunk = log.chunk_entries
        self.combined = combined  # shard 0 of several: moves the combined notes too
        self.objects: ShardObjects = log.objects
        self._advance = LuaScript(log.store.redis, _ADVANCE)
        self._trim_below = LuaScript(log.store.redis, _TRIM_BELOW)
        self._raise_to = LuaScript(log.store.redis, _RAISE_TO)

    def due(self) -> bool:
        """Whether a chunk could move now (cheap: a few GETs)."""
        return self._next_stop(self.log.cold_size()) is not None

    def move(self, max_chunks: int | None = None) -> list[Moved]:
        """Move every chunk that may move (at most ``max_chunks``), under the checkpoint lock;
        nothing when another process holds the lock (it moves them)."""
        moved: list[Moved] = []
        with self.checkpointer.holding_lock() as token:
            if token is None:
                return moved
            self.log.ensure_store_id()
            self.clear_pending()
            while max_chunks is None or len(moved) < max_chunks:
                start = self.log.cold_size()
                stop = self._next_stop(start)
                if stop is None:
                    break
                moved.append(self._move_chunk(start, stop))
            if moved and self.combined:
                self._move_combined_notes()
        return moved

    def _move_combined_notes(self) -> None:
        """Shard 0 also holds the notes signed over every shard: all but the newest move to
        ``combined/<its total size>`` (a retry after a crash writes a superset under a later
        name; readers merge both and count each note once)."""
        key = self.log.shard_keys.audit_combined_checkpoints()
        rows = cast(list[tuple[bytes, float]], self.log.store.redis.zrange(key, 0, -1, withscores=True))
        if len(rows) < 2:
            return
        threshold = int(rows[-1][1])
        older = [(member, score) for member, score in rows if score < threshold]
        self.cold.put(self.objects.combined(threshold), b"".join(
            json.dumps([int(score), member.decode()]).encode() + b"\n" for member, score in older))
        self.log.store.redis.zremrangebyscore(key, "-inf", f"({threshold}")

    def _next_stop(self, start: int) -> int | None:
        stop = start + self.chunk
        latest = self.checkpointer.latest()
        signed = latest.checkpoint.size if latest is not None else 0
        limit = min(signed, self.log.sealer.sealed_size(), self.log.size() - self.hot_entries)
        return stop if stop <= limit else None

    def _move_chunk(self, start: int, stop: int) -> Moved:
        records = self._hot_records(start, stop)
        leaves = self.log.tiles.hot.read_level(0, start, stop)
        archived = archived_size(self.log)
        postings: dict[bytes, list[int]] = {}
        for offset, (record, leaf) in enumerate(zip(records, leaves, strict=True)):
            index = start + offset
            if leaf is None:
                raise AuditIntegrityError(index, "sealed leaf hash is missing from the tree")
            if record is None:
                if index >= archived:
                    raise AuditIntegrityError(index, "entry is missing")
                continue  # archived to a file before the cold tier: only its hash moves
            if leaf_hash(record[HEADER_SIZE:]) != leaf:
                raise AuditIntegrityError(index, "entry differs from the leaf hash sealed into the tree")
            for dimension, value in _dimensions(index, record):
                postings.setdefault(index_key(dimension, value), []).append(offset)
        self._write_bundles(start, records)
        self._write_tiles(start, stop, leaves)
        self.cold.put(self.objects.chunk_index(start // self.chunk), ChunkIndex.encode(postings))
        self.cold.put(self.objects.checkpoints(start // self.chunk), self._chunk_notes(start, stop))
        now = int(cast(int, self._advance([self.log.shard_keys.audit_cold()], [start, stop])))
        if now != stop:
            raise AuditError(f"the cold boundary moved to {now} meanwhile")
        self.log.boundary.refresh()
        self._clear(start, stop, records)
        log.info("audit entries moved to the cold tier",
                 extra={"shard": self.log.shard, "start": start, "stop": stop})
        return Moved(self.log.shard, start, stop)

    def _hot_records(self, start: int, stop: int) -> list[bytes | None]:
        key = self.log.shard_keys.audit_entries()
        records: list[bytes | None] = []
        for first in range(start, stop, _BATCH):
            indexes = list(range(first, min(stop, first + _BATCH)))
            records.extend(cast(list[bytes | None], self.log.store.redis.hmget(key, indexes)))
        return records

    def _write_bundles(self, start: int, records: list[bytes | None]) -> None:
        width = self.log.tiles.width
        for offset in range(0, len(records), width):
            bundle = records[offset : offset + width]
            if all(record is not None for record in bundle):
                self.cold.put(self.objects.entry_bundle((start + offset) // width),
                              encode_bundle(cast(list[bytes], bundle)))

    def _write_tiles(self, start: int, stop: int, leaves: list[bytes | None]) -> None:
        """Level 0 from the leaves; each higher tile level whose tiles this chunk completes."""
        tiles, width, height = self.log.tiles, self.log.tiles.width, self.log.tiles.height
        for offset in range(0, stop - start, width):
            self.cold.put(self.objects.hash_tile(0, (start + offset) // width),
                          encode_hash_tile(cast(list[bytes], leaves[offset : offset + width]), width))
        tile_level = 1
        while (span := 1 << (height * (tile_level + 1))) <= stop:
            for number in range(start // span, stop // span):
                if (number + 1) * span <= start:
                    continue
                hashes = tiles.hot.read_level(height * tile_level, number * width, (number + 1) * width)
                if any(h is None for h in hashes):
                    raise AuditIntegrityError(number * span, "a sealed subtree hash is missing from the tree")
                self.cold.put(self.objects.hash_tile(tile_level, number),
                              encode_hash_tile(cast(list[bytes], hashes), width))
            tile_level += 1

    def _chunk_notes(self, start: int, stop: int) -> bytes:
        rows = cast(list[tuple[bytes, float]], self.log.store.redis.zrangebyscore(
            self.log.shard_keys.audit_checkpoints(), start, f"({stop}", withscores=True))
        return b"".join(json.dumps([int(score), member.decode()]).encode() + b"\n" for member, score in rows)

    def clear_pending(self) -> None:
        """Finish the clearing of a mover that stopped between moving the boundary and clearing
        Redis (step 3), from the cold objects."""
        raw = cast(bytes | None, self.log.store.redis.get(self.log.shard_keys.audit_cold_cleaned()))
        cleaned = int(raw or 0)
        boundary = self.log.cold_size()
        for start in range(cleaned - cleaned % self.chunk, boundary, self.chunk):
            self._clear(start, start + self.chunk, self._cold_records(start, start + self.chunk))

    def _cold_records(self, start: int, stop: int) -> list[bytes | None]:
        width = self.log.tiles.width
        records: list[bytes | None] = []
        for number in range(start // width, stop // width):
            name = self.objects.entry_bundle(number)
            data = self.cold.get(name)
            records.extend(decode_bundle(data, width, name) if data is not None else [None] * width)
        return records

    def _clear(self, start: int, stop: int, records: Iterable[bytes | None]) -> None:
        keys, redis_client = self.log.shard_keys, self.log.store.redis
        lists = {keys.audit_index(dimension, value)
                 for index, record in enumerate(records, start) if record is not None
                 for dimension, value in _dimensions(index, record)}
        pipe = redis_client.pipeline(transaction=False)
        for first in range(start, stop, _BATCH):
            pipe.hdel(keys.audit_entries(), *range(first, min(stop, first + _BATCH)))
        ordered = sorted(lists)
        for first in range(0, len(ordered), _TRIM_KEYS):  # all in the shard's slot
            self._trim_below.queue(pipe, ordered[first : first + _TRIM_KEYS], [stop])
        for level, tile in self._redis_tiles_below(start, stop):
            pipe.delete(keys.audit_tile(level, tile))
        pipe.zremrangebyscore(keys.audit_checkpoints(), "-inf", f"({stop}")
        self._raise_to.queue(pipe, [keys.audit_cold_cleaned()], [stop])
        pipe.execute()

    def _redis_tiles_below(self, start: int, stop: int) -> Iterable[tuple[int, int]]:
        """Redis tile keys whose every node the cold tier holds once the boundary is ``stop``
        and that ``[start, stop)`` completed (a key's span is a multiple of its tlog tile span)."""
        hot, level = self.log.tiles.hot, 0
        while (span := hot.span_at(level)) <= stop:
            yield from ((level, tile) for tile in range(start // span, stop // span))
            level += 1


def _dimensions(index: int, record: bytes) -> list[tuple[str, str]]:
    try:
        return index_dimensions(decode_event(record[HEADER_SIZE:]))
    except (NonCanonicalEvent, ValueError):
        raise AuditIntegrityError(index, "stored event is unreadable") from None
