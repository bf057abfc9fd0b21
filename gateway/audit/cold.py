"""The audit log's cold tier: immutable objects in the C2SP tlog-tiles layout, on files.

Once a stretch of the log is sealed and signed, nothing in it ever changes, which is what the
tlog-tiles layout (c2sp.org/tlog-tiles) is made for: write-once objects that any static file
server or object store can hold. The gateway moves old stretches of each shard there
(:mod:`gateway.audit.tiering`) so that Redis keeps only the live tail. Objects, under one
prefix per shard (``shard-<i>/``):

- ``tile/<L>/<N>`` — a full hash tile: the 256 node hashes of tree level ``8·L`` with indexes
  ``[256·N, 256·N + 256)``, back to back (tlog-tiles, "Merkle Tree"). Every node of levels
  ``8·L`` to ``8·L + 7`` inside it is computed from those 256.
- ``tile/entries/<N>`` — an entry bundle: entries ``[256·N, 256·N + 256)``, each a big-endian
  uint16 length and the stored record (tlog-tiles, "Log Entries"). One difference from the
  spec, on purpose: the record is the whole envelope ``prev ‖ nonce ‖ tag ‖ event`` (docs/audit.md,
  "Stored entries"), and the Merkle leaf is the event alone, the bytes after the 64-byte envelope.
- ``index/<N>`` — the query index of one chunk of entries (:class:`ChunkIndex`).
- ``checkpoints/<N>`` — the signed checkpoint notes of one chunk (JSON lines).
- ``combined/<N>`` — combined notes over every shard moved out of Redis (shard 0 only).

``N`` is written as tlog-tiles says: groups of three digits, every group but the last prefixed
with ``x`` (``1234067`` → ``x001/x234/067``), so that no directory holds more than 1,000 names.

Objects are immutable: :meth:`FileColdStore.put` writes to a temporary name, fsyncs, renames
and fsyncs the directory, and refuses to replace an object with different bytes. Writing the
same bytes again is a no-op, so two processes moving the same chunk cannot harm each other.
An object store (S3 and the like) fits the same three-method interface beyond one machine.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.audit.errors import AuditError, AuditIntegrityError
from gateway.audit.merkle import HASH_SIZE

TILE_HEIGHT = 8  # tlog-tiles: each tile holds 2^8 hashes of one level
CHUNK_ENTRIES = 1 << 16  # what moves at once: one level-1 hash tile, and one Redis level-0 tile
REDIS_TILE_WIDTH = 1 << 16  # hashes per Redis tile key (gateway/audit/tiles.py)


@dataclass(frozen=True, slots=True)
class TierLayout:
    """The shapes both tiers are cut into; fixed for a log's lifetime. Only tests use smaller
    ones, to reach every boundary with a few hundred entries."""

    tile_height: int = TILE_HEIGHT
    redis_tile_width: int = REDIS_TILE_WIDTH
    chunk_entries: int = CHUNK_ENTRIES

    def __post_init__(self) -> None:
        width = 1 << self.tile_height
        for value in (self.redis_tile_width, self.chunk_entries):
            if value < width or value & (value - 1):
                raise ValueError(f"chunks and Redis tiles must be powers of two of at least {width} entries")


DEFAULT_LAYOUT = TierLayout()
_LENGTH = struct.Struct(">H")
_INDEX_HEADER = struct.Struct(">4sI")
_INDEX_ROW = struct.Struct(">16sII")  # key digest, first offset, count
_INDEX_MAGIC = b"CGI1"


class ColdStore(Protocol):
    """Write-once named objects (files here; an object store beyond one machine)."""

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` durably; the same bytes again is a no-op, other bytes
        an :class:`AuditIntegrityError` (objects never change)."""

    def get(self, name: str) -> bytes | None:
        """The object, or ``None`` when it was never written."""

    def names(self, prefix: str) -> list[str]:
        """Every object name under ``prefix`` (a directory-like prefix ending in ``/``)."""


class FileColdStore:
    """Cold objects as files under ``root`` (a local disk, or a share every host mounts)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"not an object name: {name!r}")
        return self.root / name

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        existing = self.get(name)
        if existing is not None:
            if existing != data:
                raise AuditIntegrityError(None, f"cold object {name} exists with other contents")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a crash
        finally:
            os.close(directory)

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def names(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(str(path.relative_to(self.root)) for path in base.rglob("*")
                      if path.is_file() and not path.name.startswith(".tmp-"))


def tile_path(number: int) -> str:
    """tlog-tiles' encoding of a tile number: ``1234067`` → ``x001/x234/067``."""
    groups = []
    while True:
        groups.append(f"{number % 1000:03d}")
        number //= 1000
        if number == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


class ShardObjects:
    """The names of one shard's cold objects, under ``shard-<i>/<store id>/``: the store id
    (``{audit}:store-id``, gateway/audit/continuity.py) is new whenever Redis starts empty, so a
    log begun again after lost data never meets the objects of the log it replaces."""

    def __init__(self, shard: int, store_id: Callable[[], str]) -> None:
        self._shard = shard
        self._store_id = store_id
        self._prefix = ""

    @property
    def prefix(self) -> str:
        if not self._prefix:
            self._prefix = f"shard-{self._shard}/{self._store_id()}/"
        return self._prefix

    def forget(self) -> None:
        self._prefix = ""

    def hash_tile(self, level: int, number: int) -> str:
        return f"{self.prefix}tile/{level}/{tile_path(number)}"

    def entry_bundle(self, number: int) -> str:
        return f"{self.prefix}tile/entries/{tile_path(number)}"

    def chunk_index(self, chunk: int) -> str:
        return f"{self.prefix}index/{tile_path(chunk)}"

    def checkpoints(self, chunk: int) -> str:
        return f"{self.prefix}checkpoints/{tile_path(chunk)}"

    def combined(self, number: int) -> str:
        return f"{self.prefix}combined/{tile_path(number)}"


def encode_hash_tile(hashes: Sequence[bytes], width: int) -> bytes:
    if len(hashes) != width or any(len(h) != HASH_SIZE for h in hashes):
        raise ValueError(f"a full tile is {width} hashes of {HASH_SIZE} bytes")
    return b"".join(hashes)


def decode_hash_tile(data: bytes, width: int, name: str) -> list[bytes]:
    if len(data) != width * HASH_SIZE:
        raise AuditIntegrityError(None, f"cold tile {name} has {len(data)} bytes, not {width * HASH_SIZE}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(records: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(record)) + record for record in records)


def decode_bundle(data: bytes, width: int, name: str) -> list[bytes]:
    records, position = [], 0
    try:
        while position < len(data):
            (length,) = _LENGTH.unpack_from(data, position)
            position += _LENGTH.size
            if position + length > len(data):
                raise struct.error("entry runs past the end")
            records.append(data[position : position + length])
            position += length
    except struct.error:
        raise AuditIntegrityError(None, f"cold entry bundle {name} is truncated") from None
    if len(records) != width:
        raise AuditIntegrityError(None, f"cold entry bundle {name} holds {len(records)} entries, not {width}")
    return records


def index_key(dimension: str, value: str) -> bytes:
    """What a chunk index is keyed by: a digest, so the file holds no person id in clear."""
    return hashlib.sha256(f"{dimension}\0{value}".encode()).digest()[:16]


class ChunkIndex:
    """Where each (dimension, value) occurs in one chunk of the log, as offsets from its start.

    Layout: ``"CGI1" ‖ rows (uint32)``, then ``rows`` fixed rows ``digest (16) ‖ first (uint32) ‖
    count (uint32)`` sorted by digest, then the offsets (uint32 each, ascending per row). A
    lookup is a binary search over the rows, with no parsing of the rest.
    """

    def __init__(self, data: bytes, name: str) -> None:
        try:
            magic, rows = _INDEX_HEADER.unpack_from(data, 0)
        except struct.error:
            raise AuditIntegrityError(None, f"cold index {name} is truncated") from None
        body = _INDEX_HEADER.size + rows * _INDEX_ROW.size
        if magic != _INDEX_MAGIC or len(data) < body or (len(data) - body) % 4:
            raise AuditIntegrityError(None, f"cold index {name} is malformed")
        self._data, self._rows, self._body = data, rows, body
        self._digests = [data[_INDEX_HEADER.size + r * _INDEX_ROW.size:][:16] for r in range(rows)]
        self.name = name

    @staticmethod
    def encode(postings: Mapping[bytes, Sequence[int]]) -> bytes:
        rows, offsets, first = [], [], 0
        for digest in sorted(postings):
            found = sorted(postings[digest])
            rows.append(_INDEX_ROW.pack(digest, first, len(found)))
            offsets.extend(found)
            first += len(found)
        return (_INDEX_HEADER.pack(_INDEX_MAGIC, len(rows)) + b"".join(rows)
                + struct.pack(f">{len(offsets)}I", *offsets))

    def count(self, digest: bytes) -> int:
        row = self._row(digest)
        return 0 if row is None else row[1]

    def offsets(self, digest: bytes) -> list[int]:
        row = self._row(digest)
        if row is None:
            return []
        first, count = row
        start = self._body + 4 * first
        if start + 4 * count > len(self._data):
            raise AuditIntegrityError(None, f"cold index {self.name} is truncated")
        return list(struct.unpack_from(f">{count}I", self._data, start))

    def digests(self) -> Iterable[bytes]:
        return iter(self._digests)

    def _row(self, digest: bytes) -> tuple[int, int] | None:
        position = bisect.bisect_left(self._digests, digest)
        if position == self._rows or self._digests[position] != digest:
            return None
        _, first, count = _INDEX_ROW.unpack_from(self._data, _INDEX_HEADER.size + position * _INDEX_ROW.size)
        return int(first), int(count)


def require(data: bytes | None, name: str) -> bytes:
    """A cold object that must exist (the boundary says it was written)."""
    if data is None:
        raise AuditError(f"cold object {name} is missing: restore it from backup, then run "
                         "`gateway audit verify`")
    return data
