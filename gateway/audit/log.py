"""The Redis-backed audit log: append in one round trip, read entries, roots and proofs.

Append is one Lua script (one round trip, atomic, one total order across every process):
it reads the size and the head (the previous entry's leaf hash), stores the entry as
``prev || nonce || tag || event`` at index = size, moves the head to the new leaf hash, and
adds the index to the query indexes. Nothing cryptographic runs in Lua: the appender hashes
and MACs its own event *before* sending it, because neither depends on the index; the only
value that depends on the order — ``prev`` — is copied by the script, not computed.

Merkle subtree hashes are derived data. The :class:`~gateway.audit.sealer.Sealer` fills them
in afterwards (idempotently, from the stored entries, checking each one), and roots and
proofs are served only from sealed sizes. See docs/audit.md for the reasoning.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import redis

from gateway.audit.cold import DEFAULT_LAYOUT, ShardObjects, TierLayout
from gateway.audit.errors import AuditError, AuditIntegrityError
from gateway.audit.events import AuditEvent, canonical_json
from gateway.audit.merkle import (
    EMPTY_ROOT,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    materialize,
    root_at,
)
from gateway.audit.records import StoredEntry, new_tail, read_entry
from gateway.audit.sealer import Sealer
from gateway.audit.shards import shard_origin
from gateway.audit.tiered import ColdBoundary, ColdEntries, ColdIndexes, TieredTiles
from gateway.audit.tiles import RedisTiles
from gateway.store.scripts import LuaScript

if TYPE_CHECKING:
    from gateway.audit.cold import ColdStore
    from gateway.audit.keyfile import AuditKeys
    from gateway.store import Store
    from gateway.store.keys import AuditShardKeys

_HEAD_MISSING = "AUDIT_HEAD_MISSING"
_APPEND = r"""
if ARGV[4] ~= '' then
  local seen = redis.call('HGET', KEYS[5], ARGV[4])
  if seen then return tonumber(seen) end
end
local size = tonumber(redis.call('GET', KEYS[1]) or '0')
local prev = redis.call('GET', KEYS[2])
if size == 0 then
  prev = string.rep('\0', 32)
elseif not prev or string.len(prev) ~= 32 then
  return redis.error_reply('AUDIT_HEAD_MISSING')
end
local index = string.format('%d', size)
redis.call('HSET', KEYS[3], index, prev .. ARGV[2])
redis.call('SET', KEYS[1], string.format('%d', size + 1))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSETNX', KEYS[4], ARGV[3] .. ':first', index)
redis.call('HSET', KEYS[4], ARGV[3] .. ':last', index)
for k = 6, #KEYS do
  redis.call('RPUSH', KEYS[k], index)
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[4], index)
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[5]))
end
return size
"""
READ_BATCH = 1000
# How long the ids of relayed events are remembered (per UTC day of the event): an event
# staged in an outbox is appended once as long as it is relayed within this time.
EVENT_ID_DAYS = 30


@dataclass(frozen=True, slots=True)
class Appended:
    index: int
    leaf_hash: bytes
    shard: int = 0  # the shard whose log ``index`` counts in


def hour_bucket(time: str) -> str:
    """``2025-03-01T08:15:30.125Z`` → ``2025030108``: the time index groups events by UTC hour."""
    return time[0:4] + time[5:7] + time[8:10] + time[11:13]


def index_dimensions(event: AuditEvent) -> list[tuple[str, str]]:
    """The (dimension, value) query indexes an event is listed in."""
    dims: list[tuple[str, str]] = [("action", event.action), ("outcome", event.outcome)]
    if event.person is not None:
        dims.append(("person", event.person))
    if event.shop is not None:
        dims.append(("shop", event.shop))
    dims.extend(("field", name) for name in event.fields)
    return dims


class AuditLog:
    """One audit log (one shard of the gateway's log, shard 0 by default) in Redis.
    Thread-safe; share one instance per process."""

    def __init__(self, store: Store, keys: AuditKeys, shard: int = 0, cold: ColdStore | None = None,
                 layout: TierLayout = DEFAULT_LAYOUT) -> None:
        self.store = store
        self.keys = keys
        self.shard = shard
        self.shard_keys: AuditShardKeys = store.keys.audit_shard(shard)
        # The cold tier (gateway/audit/cold.py) holds what lies below the boundary; without
        # one the boundary stays 0 and everything is read from Redis, as before tiering.
        self.cold = cold
        self.objects = ShardObjects(shard, self._store_id)
        self.boundary = ColdBoundary(self.cold_size)
        hot_tiles = RedisTiles(store.redis, self.shard_keys, layout.redis_tile_width, 1 << layout.tile_height)
        self.tiles = TieredTiles(hot_tiles, cold, self.objects, self.boundary, layout.tile_height)
        self.chunk_entries = layout.chunk_entries  # what tiering moves at once
        self._cold_entries = None if cold is None else ColdEntries(cold, self.objects, self.tiles.width)
        self.cold_indexes = None if cold is None else ColdIndexes(cold, self.objects, layout.chunk_entries)
        self.sealer = Sealer(store, self.tiles, keys.mac_key, self.shard_keys)
        self._append = LuaScript(store.redis, _APPEND)
        self._sealed_hint = 0  # the sealed size only grows: below it, no Redis read is needed

    def append_event(self, event: AuditEvent, event_id: str | None = None) -> Appended:
        """Record ``event``; returns its index and leaf hash. One Redis round trip.

        With ``event_id`` (events relayed from an outbox) the append is idempotent: an id
        already appended returns the index it got then and appends nothing.

        Raises :class:`AuditIntegrityError` (and records nothing) if the log's head is gone —
        someone altered the stored log — so that callers fail closed instead of writing past
        a break in the chain.
        """
        data = canonical_json(event)
        digest = leaf_hash(data)
        k = self.shard_keys
        index_keys = [k.audit_index(dim, value) for dim, value in index_dimensions(event)]
        try:
            keys = [k.audit_size(), k.audit_head(), k.audit_entries(), k.audit_hours(),
                    k.audit_event_ids(event.time[0:4] + event.time[5:7] + event.time[8:10]), *index_keys]
            args: list[str | bytes | int] = [digest, new_tail(self.keys.mac_key, data),
                                             hour_bucket(event.time), event_id or "", EVENT_ID_DAYS * 86400]
            if self.store.replicas_to_wait:  # with WAIT on the same connection
                pipe = self.store.redis.pipeline(transaction=False)
                self._append.queue(pipe, keys, args)
                index = self.store.run_durably(pipe, k.audit_size())[0]
            else:  # one round trip (redis-py adds SCRIPT EXISTS to pipelines with scripts)
                index = self._append(keys, args)
        except redis.ResponseError as error:
            if _HEAD_MISSING in str(error):
                raise AuditIntegrityError(None, "the log's head is missing; refusing to append") from None
            raise
        return Appended(int(cast(int, index)), digest, self.shard)

    @property
    def origin(self) -> str:
        """The origin line of this log's checkpoints (its shard's, see gateway/audit/shards.py)."""
        return shard_origin(self.keys.signer.name, self.shard)

    def forget_cached_state(self) -> None:
        """Drop what this process remembers of the log (the sealed size): after Redis may have
        lost data, nothing may be assumed from before."""
        self._sealed_hint = 0
        self.boundary.forget()
        self.objects.forget()

    def _store_id(self) -> str:
        raw = cast(bytes | None, self.store.redis.get(self.shard_keys.audit_store_id()))
        if raw is None:
            raise AuditError("the log has no store id, so its cold objects cannot be named: "
                             "run `gateway audit verify`")
        return raw.decode()

    def ensure_store_id(self) -> None:
        """Give the store its id if nothing did yet (continuity does the same, also with NX)."""
        self.store.redis.set(self.shard_keys.audit_store_id(), secrets.token_hex(16), nx=True)

    def cold_size(self) -> int:
        """Entries below this index are read from the cold tier (0 without one)."""
        if self.cold is None:
            return 0
        return int(cast(bytes | None, self.store.redis.get(self.shard_keys.audit_cold())) or 0)

    def size(self) -> int:
        return int(cast(bytes | None, self.store.redis.get(self.shard_keys.audit_size())) or 0)

    def read_entries(self, indexes: Sequence[int]) -> list[StoredEntry | str]:
        """The stored entries at ``indexes`` (a reason string where one cannot be read)."""
        return [read_entry(i, raw) for i, raw in zip(indexes, self.read_records(indexes), strict=True)]

    def read_records(self, indexes: Sequence[int]) -> list[bytes | None]:
        """The stored records at ``indexes`` from whichever tier holds each (``None``: none does)."""
        boundary = self.boundary.known
        records: list[bytes | None] = []
        hot = [i for i in indexes if i >= boundary]
        hot_records: list[bytes | None] = []
        for start in range(0, len(hot), READ_BATCH):
            chunk = hot[start : start + READ_BATCH]
            hot_records.extend(cast(list[bytes | None],
                                    self.store.redis.hmget(self.shard_keys.audit_entries(), chunk)))
        if None in hot_records and self.boundary.refresh() > boundary:
            return self.read_records(indexes)  # moved to the cold tier meanwhile: read again
        cold = iter(self._cold_entries.read([i for i in indexes if i < boundary])
                    if self._cold_entries is not None else [])
        found = iter(hot_records)
        for index in indexes:
            records.append(next(found) if index >= boundary else next(cold))
        return records

    def seal(self, up_to: int | None = None) -> int:
        """Fill in the tree up to ``up_to`` (default: the current size); returns the sealed size."""
        return self.sealer.seal(self.size() if up_to is None else up_to)

    def _sealed_to(self, size: int) -> None:
        if size <= self._sealed_hint:
            return
        if size > self.size():
            raise ValueError(f"the log has fewer than {size} entries")
        sealed = self.sealer.sealed_size()
        if sealed < size:
            sealed = self.sealer.seal(size)
        self._sealed_hint = max(self._sealed_hint, sealed)

    def root(self, size: int) -> bytes:
        """MTH(D[0:size]) (RFC 9162 §2.1.1) from O(log size) stored hashes."""
        if size == 0:
            return EMPTY_ROOT
        self._sealed_to(size)
        return root_at(size, self.tiles)

    def leaf_hash(self, index: int) -> bytes:
        self._sealed_to(index + 1)
        return materialize([[(0, index)]], self.tiles)[0]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf's sibling first."""
        self._sealed_to(size)
        return materialize(inclusion_plan(index, size), self.tiles)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) (RFC 9162 §2.1.4.1)."""
        if old_size in (0, new_size):
            return []  # the trivial cases outside RFC 9162 §2.1.4.2: nothing to prove
        self._sealed_to(new_size)
        return materialize(consistency_plan(old_size, new_size), self.tiles)
