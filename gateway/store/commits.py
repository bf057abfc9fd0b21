"""A state change and the audit events that describe it, committed in one script.

The audit log lives in its own slot (on Redis Cluster, on another node), so a change in a
person's slot and an append to the log cannot be one transaction. Instead the events are
written into the person's *outbox* (a hash in the person's slot) by the same script that
makes the change — both happen or neither does — and are then appended to the log by the
request and, if that fails, by the relay (:mod:`gateway.audit.relay`), idempotently by
event id. This module only moves bytes; what a change means is decided by its callers.

The same script adds the person to a *pending set*, so the set always holds every person
with staged events (the relay removes a person only in a script that finds the outbox empty).
On one server that is one set; on Redis Cluster a script cannot reach a set in another slot,
so each slot has its own (``{<slot tag>}:outbox:pending``, gateway/store/slots.py) and the
relay looks at 512 of them per pass, in turn: exact in every interleaving, at the price of a
relay that finds a stranded outbox within 32 passes (about half a minute) instead of one
(the request that made the change relays its own events at once; the relay is for when the
log was unavailable).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from gateway.store.scripts import LuaScript
from gateway.store.slots import SLOTS, person_slot, slot_tag

if TYPE_CHECKING:
    from gateway.store.connection import Store

SLOT_SAMPLE = 512  # cluster: pending sets a relay pass looks at (all 16384 in 32 passes)

# KEYS[1] record, KEYS[2] grant generation, KEYS[3] outbox, KEYS[4] the shop's family index,
# KEYS[5] the pending set (ARGV[5]: the person).
# ARGV[1] SHA-1 of the record as it was read ('' = absent), ARGV[2] its new value ('' =
# delete), ARGV[3] '1' = end the grant's generation, ARGV[4] n, ARGV[5] the person, then n
# (id, event) pairs
# staged always, then one optional (id, event) pair staged only if tokens were live (the
# family index exists). Returns -1 when the record changed since it was read, 2 when the
# optional event was staged, 1 otherwise.
_COMMIT = """
local current = redis.call('GET', KEYS[1])
local seen = ''
if current then seen = redis.sha1hex(current) end
if seen ~= ARGV[1] then return -1 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
if ARGV[3] == '1' then redis.call('INCR', KEYS[2]) end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[3], ARGV[6 + 2 * i], ARGV[7 + 2 * i])
end
if n > 0 then redis.call('SADD', KEYS[5], ARGV[5]) end
local tail = 6 + 2 * n
if ARGV[tail] and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[tail], ARGV[tail + 1])
  redis.call('SADD', KEYS[5], ARGV[5])
  return 2
end
return 1
"""

# KEYS[1] the erasure marker, KEYS[2] outbox, KEYS[3] the pending set, KEYS[4..] keys deleted
# with the person. ARGV[1] the person, then (id, event) pairs.
_ERASE = """
redis.call('SET', KEYS[1], '1')
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if #ARGV > 1 then redis.call('SADD', KEYS[3], ARGV[1]) end
return 1
"""

# KEYS[1] outbox, KEYS[2] pending set, ARGV[1] person: forget the person in the pending set
# only if the outbox is empty (checked in the same step, so no staged event is orphaned).
_PRUNE = """
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


class Commit(enum.Enum):
    CONFLICT = -1  # the record changed since it was read: read again and retry
    DONE = 1
    DONE_TOKENS_LIVE = 2  # done, and the optional event (tokens were live) was staged


@dataclass(frozen=True, slots=True)
class Staged:
    """An audit event as staged in an outbox: its id and its canonical JSON."""

    event_id: str
    payload: bytes


class Commits:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._next_slot = random.randrange(SLOTS)  # noqa: S311 - where this relay looks next, not a secret
        self._commit = LuaScript(store.redis, _COMMIT)
        self._erase = LuaScript(store.redis, _ERASE)
        self._prune = LuaScript(store.redis, _PRUNE)

    def change_record(self, person_id: str, *, record_key: str, grant_key: str, family_index: str,
                      seen_sha1: str, new_value: str | None, end_generation: bool,
                      events: Sequence[Staged], if_tokens_live: Staged | None = None) -> Commit:
        """Replace (or delete) one record of the person if it is still as read, optionally
        ending the grant's generation, and stage ``events``; one round trip."""
        keys = self._store.keys
        args: list[str | bytes | int] = [seen_sha1, new_value or "", "1" if end_generation else "0",
                                         len(events), person_id]
        for staged in events:
            args += [staged.event_id, staged.payload]
        if if_tokens_live is not None:
            args += [if_tokens_live.event_id, if_tokens_live.payload]
        pipe = self._store.pipeline()
        self._commit.queue(pipe, [record_key, grant_key, keys.person_outbox(person_id), family_index,
                                  self.pending_key(person_id)], args)
        return Commit(int(cast(int, self._store.run_durably(pipe, record_key)[0])))

    def erase_person(self, person_id: str, deleted: Sequence[str], events: Sequence[Staged]) -> None:
        """Mark the person erased, delete ``deleted`` and stage ``events``; one round trip."""
        keys = self._store.keys
        args: list[str | bytes] = [person_id]
        for staged in events:
            args += [staged.event_id, staged.payload]
        pipe = self._store.pipeline()
        self._erase.queue(pipe, [keys.person_erased(person_id), keys.person_outbox(person_id),
                                 self.pending_key(person_id), *deleted], args)
        self._store.run_durably(pipe, keys.person_erased(person_id))

    def pending_key(self, person_id: str) -> str:
        """The pending set a change of this person goes into: the one set on a single server,
        the set of the person's slot on a cluster."""
        if self._store.cluster:
            return self._store.keys.outbox_pending_in_slot(slot_tag(person_slot(person_id)))
        return self._store.keys.outbox_pending()

    def staged(self, person_id: str) -> list[Staged]:
        raw = cast(dict[bytes, bytes], self._store.redis.hgetall(self._store.keys.person_outbox(person_id)))
        return [Staged(k.decode(), v) for k, v in raw.items()]

    def unstage(self, person_id: str, event_ids: Sequence[str]) -> None:
        """Remove relayed events, and the person from the pending set if nothing is left."""
        keys = self._store.keys
        pipe = self._store.pipeline()
        if event_ids:
            pipe.hdel(keys.person_outbox(person_id), *event_ids)
        self._prune.queue(pipe, [keys.person_outbox(person_id), self.pending_key(person_id)], [person_id])
        pipe.execute()

    def pending(self, count: int) -> list[str]:
        """Up to ``count`` persons that may have staged events, in random order (so several
        relays spread over them). On a cluster: from the pending sets of the next
        ``SLOT_SAMPLE`` slots after this process's last look (one pipeline, a round trip per
        node), starting at a random slot, so that every slot is looked at within
        :attr:`passes_per_sweep` passes and several processes spread over the slots."""
        if not self._store.cluster:
            pending = self._store.keys.outbox_pending()
            return [m.decode() for m in cast(list[bytes], self._store.redis.srandmember(pending, count))]
        start, self._next_slot = self._next_slot, (self._next_slot + SLOT_SAMPLE) % SLOTS
        pipe = self._store.pipeline()
        for slot in range(start, start + SLOT_SAMPLE):
            pipe.srandmember(self._store.keys.outbox_pending_in_slot(slot_tag(slot % SLOTS)), count)
        found = [m.decode() for members in cast(list[list[bytes]], pipe.execute()) for m in members]
        return found[:count]

    def is_pending(self, person_id: str) -> bool:
        """Whether the person is in the pending set their changes go to."""
        return bool(self._store.redis.sismember(self.pending_key(person_id), person_id))

    @property
    def passes_per_sweep(self) -> int:
        """Passes of :meth:`pending` that look at every pending set once."""
        return SLOTS // SLOT_SAMPLE if self._store.cluster else 1
