"""Complete-subtree hashes in Redis.

Each tree level is cut into *tiles* of ``TILE_WIDTH`` consecutive node hashes; a tile is one
Redis string holding the 32-byte hashes back to back, so node ``(level, index)`` lives at byte
``32 * (index % TILE_WIDTH)`` of key ``{audit}:tile:<level>:<index // TILE_WIDTH>`` (or the
shard's tag for shards > 0). Writing a node is ``SETRANGE``, which is idempotent: two
processes filling the same node write the same bytes, so no lock is needed. Bytes not yet
written read as zeros (``SETRANGE`` pads), and an all-zero "hash" is taken as "not stored".

A 2 MiB tile keeps every key small enough to migrate between cluster nodes, and stays far from
Redis' 512 MB string limit however long the log grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

from gateway.audit.cold import REDIS_TILE_WIDTH
from gateway.audit.merkle import HASH_SIZE, Coord

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

    from gateway.store.keys import AuditShardKeys

TILE_WIDTH = REDIS_TILE_WIDTH
_ABSENT = bytes(HASH_SIZE)


class RedisTiles:
    """Reads and writes subtree hashes; implements :class:`gateway.audit.merkle.SubtreeReader`."""

    def __init__(self, client: redis.Redis, keys: AuditShardKeys, width: int = TILE_WIDTH) -> None:
        self._redis = client
        self._keys = keys
        self.width = width  # smaller only in tests, to reach tile boundaries with few entries

    def _key_and_offset(self, level: int, index: int) -> tuple[str, int]:
        return self._keys.audit_tile(level, index // self.width), (index % self.width) * HASH_SIZE

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
        for begin, end in _tile_runs(start, stop, self.width):
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
                for run_begin, run_end in _tile_runs(begin, end, self.width):
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
