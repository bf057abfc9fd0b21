"""Reading the log across both tiers: Redis for the live tail, the cold store below a boundary.

The boundary (``{audit}:cold``, a multiple of the chunk width) only grows. Below it, entries
are read from entry bundles, and every complete subtree whose tlog tile is full and below it
from hash tiles; everything else from Redis. Because the boundary moves *before* Redis is
cleared (gateway/audit/tiering.py), a reader that looked at an older boundary and finds a
hash or entry gone from Redis re-reads the boundary and takes it from the cold store: no
reader ever sees a hole, and no Redis round trip is added while nothing moves.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from gateway.audit.cold import (
    TILE_HEIGHT,
    ChunkIndex,
    ColdStore,
    ShardObjects,
    decode_bundle,
    decode_hash_tile,
    index_key,
    require,
)
from gateway.audit.errors import AuditError
from gateway.audit.merkle import Coord, node_hash

if TYPE_CHECKING:
    from redis.client import Pipeline

    from gateway.audit.tiles import RedisTiles

K = TypeVar("K")
V = TypeVar("V")


class RecentCache(Generic[K, V]):
    """A small thread-safe LRU cache of decoded cold objects (they never change)."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: K, load: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


class ColdBoundary:
    """The shard's cold boundary, remembered between reads (it only grows)."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read
        self.known = 0

    def refresh(self) -> int:
        self.known = max(self.known, self._read())
        return self.known

    def forget(self) -> None:
        self.known = 0


class TieredTiles:
    """Complete-subtree hashes from Redis and the cold tier; a
    :class:`gateway.audit.merkle.SubtreeReader` with the reads and writes of
    :class:`gateway.audit.tiles.RedisTiles` (writes always go to Redis: sealing happens above
    the boundary)."""

    def __init__(self, hot: RedisTiles, cold: ColdStore | None, objects: ShardObjects,
                 boundary: ColdBoundary, height: int = TILE_HEIGHT) -> None:
        self.hot = hot
        self.cold = cold
        self.objects = objects
        self.boundary = boundary
        self.height = height
        self.width = 1 << height
        self._tiles: RecentCache[tuple[int, int], list[list[bytes]]] = RecentCache(512)

    def tile_end(self, level: int, index: int) -> int:
        """The end (in leaves) of the hash tile holding node ``(level, index)``."""
        span = 1 << (self.height * (level // self.height + 1))
        return ((index << level) // span + 1) * span

    def is_cold(self, level: int, index: int, boundary: int) -> bool:
        return self.cold is not None and self.tile_end(level, index) <= boundary

    def get_subtrees(self, coords: Sequence[Coord]) -> list[bytes | None]:
        return self._resolve(list(coords), self.hot.get_subtrees)

    def read_level(self, level: int, start: int, stop: int) -> list[bytes | None]:
        """Nodes ``start`` to ``stop - 1`` of one level, from whichever tier holds each."""
        boundary = self.boundary.known
        cold_stop = start
        while cold_stop < stop and self.is_cold(level, cold_stop, boundary):
            cold_stop += 1
        found: list[bytes | None] = [self._cold_node(level, i) for i in range(start, cold_stop)]
        if cold_stop < stop:
            hot = self.hot.read_level(level, cold_stop, stop)
            if any(h is None for h in hot) and self.boundary.refresh() > boundary:
                return self.read_level(level, start, stop)  # moved meanwhile: read it again
            found.extend(hot)
        return found

    def queue_writes(self, pipe: Pipeline, nodes: Iterable[tuple[Coord, bytes]]) -> None:
        self.hot.queue_writes(pipe, nodes)

    def _resolve(self, coords: list[Coord],
                 read_hot: Callable[[Sequence[Coord]], list[bytes | None]]) -> list[bytes | None]:
        boundary = self.boundary.known
        result: list[bytes | None] = [None] * len(coords)
        hot = [i for i, (level, index) in enumerate(coords) if not self.is_cold(level, index, boundary)]
        for i, (level, index) in enumerate(coords):
            if not self.is_cold(level, index, boundary):
                continue
            result[i] = self._cold_node(level, index)
        if hot:
            for i, value in zip(hot, read_hot([coords[i] for i in hot]), strict=True):
                result[i] = value
            if any(result[i] is None for i in hot) and self.boundary.refresh() > boundary:
                return self._resolve(coords, read_hot)  # the boundary moved: read it again
        return result

    def _cold_node(self, level: int, index: int) -> bytes:
        tile_level = level // self.height
        depth = level - tile_level * self.height  # levels above the tile's own
        number = (index << depth) >> self.height
        levels = self._tiles.get((tile_level, number), lambda: self._tile_levels(tile_level, number))
        return levels[depth][index - (number << (self.height - depth))]

    def _tile_levels(self, tile_level: int, number: int) -> list[list[bytes]]:
        """The tile's hashes and every level computed above them inside the tile."""
        if self.cold is None:
            raise AuditError("no cold store is configured, but the log has a cold tier")
        name = self.objects.hash_tile(tile_level, number)
        levels = [decode_hash_tile(require(self.cold.get(name), name), self.width, name)]
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below), 2)])
        return levels


class ColdEntries:
    """Stored records of entries below the cold boundary, from entry bundles."""

    def __init__(self, cold: ColdStore, objects: ShardObjects, width: int) -> None:
        self.cold = cold
        self.objects = objects
        self.width = width
        self._bundles: RecentCache[int, list[bytes] | None] = RecentCache(64)

    def read(self, indexes: Sequence[int]) -> list[bytes | None]:
        """The records at ``indexes``; ``None`` where no bundle holds one (archived to a file
        before the cold tier took over)."""
        found: list[bytes | None] = []
        for index in indexes:
            number = index // self.width
            bundle = self._bundles.get(number, functools.partial(self._load, number))
            found.append(None if bundle is None else bundle[index % self.width])
        return found

    def _load(self, number: int) -> list[bytes] | None:
        name = self.objects.entry_bundle(number)
        data = self.cold.get(name)
        return None if data is None else decode_bundle(data, self.width, name)


class ColdIndexes:
    """The query indexes of chunks below the cold boundary (gateway/audit/cold.py, ChunkIndex)."""

    def __init__(self, cold: ColdStore, objects: ShardObjects, chunk_entries: int) -> None:
        self.cold = cold
        self.objects = objects
        self.chunk_entries = chunk_entries
        self._indexes: RecentCache[int, ChunkIndex] = RecentCache(256)

    def positions(self, chunk: int, wanted: Sequence[tuple[str, str]]) -> list[int] | None:
        """Indexes in ``chunk`` listed under the rarest of ``wanted`` (every dimension must be
        listed there for an event to match, so the rarest list holds every match), ascending;
        ``None`` when nothing narrows the chunk (no dimension asked for)."""
        if not wanted:
            return None
        index = self._indexes.get(chunk, functools.partial(self._load, chunk))
        digests = [index_key(dimension, value) for dimension, value in wanted]
        rarest = min(digests, key=index.count)
        start = chunk * self.chunk_entries
        return [start + offset for offset in index.offsets(rarest)]

    def _load(self, chunk: int) -> ChunkIndex:
        name = self.objects.chunk_index(chunk)
        return ChunkIndex(require(self.cold.get(name), name), name)
