"""Complete-subtree hashes in Redis.

Each tree level is cut into *tiles* of consecutive node hashes; a tile is one Redis string
holding the 32-byte hashes back to back, so node ``(level, index)`` lives at byte
``32 * (index % w)`` of key ``{audit}:tile:<level>:<index // w>`` (or the shard's tag for
shards > 0), where ``w = max(MIN_TILE_WIDTH, TILE_WIDTH >> level)``: 65,536 hashes at the
leaves, half as many each level up, down to 256. Every key of the lowest nine levels so
spans the same 65,536 leaves, and the cold tier (gateway/audit/tiering.py) can delete a key
as soon as the leaves it spans are cold: with one width for every level, a key at level
``L`` would span ``65,536 · 2^L`` leaves, and the key straddling the cold boundary (up to
2 MiB) would stay in Redis at every level, so Redis memory would grow with the log's height.

Writing a node is ``SETRANGE``, which is idempotent: two processes filling the same node
write the same bytes, so no lock is needed. Bytes not yet written read as zeros
(``SETRANGE`` pads), and an all-zero "hash" is taken as "not stored".

A 2 MiB tile keeps every key small enough to migrate between cluster nodes, and stays far from
Redis' 512 MB string limit however long the log grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

from gateway.audit.cold import REDIS_TILE_WIDTH, TILE_HEIGHT
from gateway.audit.merkle import HASH_SIZE, Coord

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

    from gateway.store.keys import AuditShardKeys

TILE_WIDTH = REDIS_TILE_WIDTH
MIN_TILE_WIDTH = 1 << TILE_HEIGHT  # a tlog tile's width: a key's span stays a multiple of its tile's
_ABSENT = bytes(HASH_SIZE)


class RedisTiles:
    """Reads and writes subtree hashes; implements :class:`gateway.audit.merkle.SubtreeReader`."""

    def __init__(self, client: redis.Redis, keys: AuditShardKeys, width: int = TILE_WIDTH,
                 min_width: int = MIN_TILE_WIDTH) -> None:
        self._redis = client
        self._keys = keys
        # Smaller only in tests, to reach tile boundaries with few entries.
        self.width = width
        self.min_width = min(min_width, width)

    def width_at(self, level: int) -> int:
        """Hashes per key at ``level``: each key spans ``max(width, min_width << level)`` leaves."""
        return max(self.min_width, self.width >> level)

    def span_at(self, level: int) -> int:
        """Leaves under one key of ``level``."""
        return self.width_at(level) << level

    def _key_and_offset(self, level: int, index: int) -> tuple[str, int]:
        width = self.width_at(level)
        return self._keys.audit_tile(level, index // width), (index % width) * HASH_SIZE

    def get_subtrees(self, coords: Sequence[Coord]) -> list[bytes | None]:
        """One round trip for any number of coordinates."""
        pipe = self._redis.pipeline(transaction=False)
        for level, index in coords:
            key, offset = self._key_and_offset(level, index)
            pipe.getrange(key, offset, offset + HASH_SIZE - 1)
        return [_stored(cast(bytes, value)) for value in pipe.execute()]

    def read_level(self, level: int, start: int, stop: int) -> list[bytes | None]:
        """Nodes ``start`` to ``stop - 1`` of one level (a few GETRANGEs, one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for begin, end in _tile_runs(start, stop, self.width_at(level)):
            key, offset = self._key_and_offset(level, begin)
            pipe.getrange(key, offset, offset + (end - begin) * HASH_SIZE - 1)
        data = b"".join(cast(list[bytes], pipe.execute()))
        return [_stored(data[i : i + HASH_SIZE]) for i in range(0, (stop - start) * HASH_SIZE, HASH_SIZE)]

    def queue_writes(self, pipe: Pipeline, nodes: Iterable[tuple[Coord, bytes]]) -> None:
        """Add SETRANGE commands for ``nodes`` to ``pipe``, one per contiguous run within a tile."""
        by_level: dict[int, dict[int, bytes]] = {}
        for (level, index), value in nodes:
            by_level.setdefault(level, {})[index] = value
        for level, values in by_level.items():
            for begin, end in _runs(sorted(values)):
                for run_begin, run_end in _tile_runs(begin, end, self.width_at(level)):
                    key, offset = self._key_and_offset(level, run_begin)
                    pipe.setrange(key, offset, b"".join(values[i] for i in range(run_begin, run_end)))


def _stored(value: bytes) -> bytes | None:
    return value if len(value) == HASH_SIZE and value != _ABSENT else None


def _runs(indexes: Sequence[int]) -> Iterable[tuple[int, int]]:
    """Maximal runs of consecutive integers in a sorted list, as half-open ranges."""
    if not indexes:
        return
    begin = previous = indexes[0]
    for index in indexes[1:]:
        if index != previous + 1:
            yield begin, previous + 1
            begin = index
        previous = index
    yield begin, previous + 1


def _tile_runs(start: int, stop: int, width: int) -> Iterable[tuple[int, int]]:
    """``[start, stop)`` cut at tile boundaries."""
    while start < stop:
        end = min(stop, (start // width + 1) * width)
        yield start, end
        start = end
