"""Sealing: checking new entries and storing the complete-subtree hashes they finish.

Anyone may seal, at any time, concurrently: the hashes are a pure function of the entries and
are written with idempotent ``SETRANGE``; the sealed size only ever grows (a small Lua
``max``). Before a hash is stored, each entry it covers is checked — canonical event, MAC, and
the ``prev`` link to the entry before — so the checkpointer never signs a root over an entry
that is not genuine. A failed check raises :class:`AuditIntegrityError` with the index and
stops sealing there: checkpoints stop advancing, which is the alarm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from gateway.audit.errors import AuditIntegrityError
from gateway.audit.merkle import Coord, TreeBuilder, materialize, root_plan
from gateway.audit.records import ZERO_HASH, StoredEntry, check_entry, read_entry
from gateway.store.scripts import LuaScript

if TYPE_CHECKING:
    from gateway.audit.tiered import TieredTiles
    from gateway.store import Store
    from gateway.store.keys import AuditShardKeys

_RAISE_TO = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1])
end
return current
"""
SEAL_BATCH = 4096


def link_problem(entry: StoredEntry, previous_leaf: bytes) -> str | None:
    if entry.prev != previous_leaf:
        return (f"entry does not link to entry {entry.index - 1}: an entry before it was altered, "
                "removed or moved, or this one was")
    return None


class Sealer:
    def __init__(self, store: Store, tiles: TieredTiles, mac_key: bytes, keys: AuditShardKeys,
                 batch: int = SEAL_BATCH) -> None:
        self._store = store
        self._keys = keys
        self._tiles = tiles
        self._mac_key = mac_key
        self._batch = batch
        self._raise_to = LuaScript(store.redis, _RAISE_TO)

    def sealed_size(self) -> int:
        return int(cast(bytes | None, self._store.redis.get(self._keys.audit_sealed())) or 0)

    def _resume(self, sealed: int) -> tuple[TreeBuilder, bytes]:
        """The builder's right edge at ``sealed`` and the last sealed leaf hash, in one read."""
        if sealed == 0:
            return TreeBuilder(), ZERO_HASH
        plan: list[list[Coord]] = [[coord] for coord in root_plan(sealed)]
        hashes = materialize([*plan, [(0, sealed - 1)]], self._tiles)
        return TreeBuilder(sealed, hashes[:-1]), hashes[-1]

    def seal(self, up_to: int) -> int:
        """Seal entries ``[sealed, up_to)``; returns the sealed size afterwards."""
        sealed = self.sealed_size()
        if sealed >= up_to:
            return sealed
        builder, previous = self._resume(sealed)
        entries_key = self._keys.audit_entries()
        for start in range(sealed, up_to, self._batch):
            stop = min(up_to, start + self._batch)
            raws = cast(list[bytes | None], self._store.redis.hmget(entries_key, list(range(start, stop))))
            nodes: list[tuple[Coord, bytes]] = []
            for index, raw in enumerate(raws, start):
                entry = read_entry(index, raw)
                if isinstance(entry, str):
                    raise AuditIntegrityError(index, entry)
                problem = check_entry(entry, self._mac_key) or link_problem(entry, previous)
                if problem:
                    raise AuditIntegrityError(index, problem)
                previous = entry.leaf_hash()
                nodes.extend(builder.push(previous))
            pipe = self._store.redis.pipeline(transaction=True)
            self._tiles.queue_writes(pipe, nodes)
            self._raise_to.queue(pipe, [self._keys.audit_sealed()], [stop])
            pipe.execute()
        return up_to
