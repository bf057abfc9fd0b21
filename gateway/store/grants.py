"""Grant generations: the Lua scripts that make "consent is checked at every use" atomic.

A *grant* is what one person gave one shop. Its *generation* is an integer in the person's
slot (``{p:<person>}:grant:<shop>``); every code and token records the generation it was
issued under, and with its person, shop and family the names of its grant and family keys
follow (:func:`checked_keys`). A record is live only while

- its grant key holds the same generation (withdrawal and narrowing ``INCR`` it, erasure
  deletes it: a missing grant key means "no grant"), and
- its family does not hold the ``!dead`` marker (a replayed code or refresh token marks the
  family dead before it deletes the members, so a winner that saves its tokens *after* the
  replay was seen finds the marker and saves nothing).

Each check runs in the same script that loads or writes the credential, so there is no
extra round trip and no window between check and use (docs/architecture.md,
"Consistency"). Records are compact JSON (gateway/oidc/credentials.py) whose ``g``, ``p``,
``c``, ``f`` (and, where the keys are not the canonical ones, ``G`` and ``F``) members the
scripts read with ``cjson``; records written before compact records name ``gen``,
``grant_key`` and ``family_key`` and are read too. Used single-use values are kept behind a
``!`` marker as tombstones, so that a second presentation is seen as a replay.

Cluster note: a credential's key is tagged with its person's slot (gateway/store/slots.py),
so every script here touches one slot; on a cluster, a peek first reads the record to declare
the grant and family keys it checks (one more round trip, see ``_PEEK``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from gateway.store.scripts import LuaScript

if TYPE_CHECKING:
    from gateway.store.connection import Store
    from gateway.store.keys import KeySpace

DEAD = "!dead"  # the entry that marks a token family as revoked

# Families, family indexes and records are kept small (docs/storage.md, "Memory"): a family is
# a hash of token digest -> the rest of the token's key name without the prefix (``{s1f3}:rt``),
# a family index a hash of family id -> '' (the full family key name where it is not the
# person's canonical one: families of records from before slot hints). Hashes of short
# entries use Redis's compact listpack encoding; sets of strings never do on Redis 7.0.
# Families and indexes written before are sets of full key names: read as they are, and
# rewritten as hashes the next time something is added to them. ``prefix``: the key prefix.
_FAMILIES = """
local function token_entry(key, prefix)
  return string.match(string.sub(key, #prefix + 1), '^(.*):(%x+)$')
end
local function dead(family)
  if redis.call('TYPE', family).ok == 'set' then return redis.call('SISMEMBER', family, '!dead') == 1 end
  return redis.call('HEXISTS', family, '!dead') == 1
end
local function kill(family, ttl, prefix)
  local kind = redis.call('TYPE', family).ok
  if kind == 'set' then
    for _, member in ipairs(redis.call('SMEMBERS', family)) do
      if member ~= '!dead' then redis.call('DEL', member) end
    end
  elseif kind == 'hash' then
    local entries = redis.call('HGETALL', family)
    for i = 1, #entries, 2 do
      if entries[i] ~= '!dead' then redis.call('DEL', prefix .. entries[i + 1] .. ':' .. entries[i]) end
    end
  end
  redis.call('DEL', family)
  redis.call('HSET', family, '!dead', '1')
  redis.call('EXPIRE', family, ttl)
end
local function add_token(family, key, prefix)
  if redis.call('TYPE', family).ok == 'set' then
    local members = redis.call('SMEMBERS', family)
    redis.call('DEL', family)
    for _, member in ipairs(members) do
      local rest, digest = token_entry(member, prefix)
      redis.call('HSET', family, digest, rest)
    end
  end
  local rest, digest = token_entry(key, prefix)
  redis.call('HSET', family, digest, rest)
end
local function index_entry(family, base)
  if string.sub(family, 1, #base) == base then return string.sub(family, #base + 1) end
  return family
end
local function index_family(entry, base)
  if string.find(entry, ':', 1, true) then return entry end
  return base .. entry
end
local function index_add(index, family, base)
  if redis.call('TYPE', index).ok == 'set' then
    local members = redis.call('SMEMBERS', index)
    redis.call('DEL', index)
    for _, member in ipairs(members) do redis.call('HSET', index, index_entry(member, base), '') end
  end
  redis.call('HSET', index, index_entry(family, base), '')
end
"""

# The grant and family keys a record is checked against (``checked_keys`` below says the same
# in Python): named by the record where it was written before compact records or its keys are
# not the canonical ones, else built from its person, shop and family as gateway/store/keys.py
# builds them.
_CHECKED = """
local function checked(rec, prefix)
  if rec.gen ~= nil then return rec.grant_key, rec.family_key, rec.gen end
  local person = prefix .. '{p:' .. rec.p .. '}:'
  return rec.G or (person .. 'grant:' .. rec.c), rec.F or (person .. 'fam:' .. rec.f), rec.g
end
local function live(gen, grant_key, family_key)
  if grant_key == nil or family_key == nil then return false end
  local current = redis.call('GET', grant_key)
  if not current or tonumber(current) ~= tonumber(gen) then return false end
  return not dead(family_key)
end
"""

# KEYS[1] credential, KEYS[2] the answer its exchange left for a repeat (see _EXCHANGE), and
# on Redis Cluster KEYS[3] its grant and KEYS[4] its family as its record names them (read in
# a first step): keys a script reads must be declared there, or while the slot migrates the
# script may run on a node that has the credential but no longer the grant, and take a moved
# grant for a withdrawn one. ARGV[1] family ttl, ARGV[2] '1' = a used value is a replay (kill
# its family) unless its answer is still kept and its grant live, ARGV[3] the key prefix.
# Returns {outcome, value[, answer]}.
_PEEK = _FAMILIES + _CHECKED + """
local value = redis.call('GET', KEYS[1])
if not value then return {0} end
local used = string.sub(value, 1, 1) == '!'
local rec = cjson.decode(used and string.sub(value, 2) or value)
local grant_key, family_key, gen = checked(rec, ARGV[3])
if KEYS[3] then
  if KEYS[3] ~= grant_key or KEYS[4] ~= family_key then return {0} end
end
if used then
  local answer = redis.call('GET', KEYS[2])
  if answer then
    if live(gen, grant_key, family_key) then return {4, string.sub(value, 2), answer} end
    return {3, string.sub(value, 2)}
  end
  if ARGV[2] == '1' then kill(family_key, tonumber(ARGV[1]), ARGV[3]) end
  return {2, string.sub(value, 2)}
end
if not live(gen, grant_key, family_key) then return {3, value} end
return {1, value}
"""

# Take a code or refresh token and write what it is exchanged for, atomically, with the audit
# event that says so staged in the person's outbox (gateway/store/commits.py): a reply lost
# after the exchange, or a log that cannot take the event at once, then neither loses the
# event nor leaves the shop holding a used-up token it would have to replay.
# A refresh also leaves its answer, sealed under the refresh token itself
# (gateway/oidc/repeats.py), for a short while: a shop that lost the reply and asks again
# with the same token gets the same answer instead of a replay that ends the family.
# KEYS[1] credential, KEYS[2] grant, KEYS[3] family, KEYS[4] the person-shop family index,
# KEYS[5] outbox, KEYS[6] pending set, KEYS[7] the kept answer, KEYS[8..] the new tokens.
# ARGV[1] expected generation, ARGV[2] tombstone ttl, ARGV[3] family ttl, ARGV[4] event id
# ('' = none), ARGV[5] event, ARGV[6] person, ARGV[7] the sealed answer ('' = none), ARGV[8]
# its ttl, ARGV[9] the key prefix, ARGV[10] the person's family key without the id, then one
# (value, ttl) pair per new token.
_EXCHANGE = _FAMILIES + """
local value = redis.call('GET', KEYS[1])
if not value then return {0} end
if string.sub(value, 1, 1) == '!' then
  local answer = redis.call('GET', KEYS[7])
  if answer then
    if redis.call('GET', KEYS[2]) == ARGV[1] and not dead(KEYS[3]) then
      return {4, answer}
    end
    return {3}
  end
  kill(KEYS[3], tonumber(ARGV[3]), ARGV[9])
  return {2}
end
local gen = redis.call('GET', KEYS[2])
if not gen or gen ~= ARGV[1] or dead(KEYS[3]) then
  redis.call('DEL', KEYS[1])
  return {3}
end
redis.call('SET', KEYS[1], '!' .. value, 'EX', tonumber(ARGV[2]))
if ARGV[7] ~= '' then redis.call('SET', KEYS[7], ARGV[7], 'EX', tonumber(ARGV[8])) end
for i = 8, #KEYS do
  local at = 11 + (i - 8) * 2
  redis.call('SET', KEYS[i], ARGV[at], 'EX', tonumber(ARGV[at + 1]))
  add_token(KEYS[3], KEYS[i], ARGV[9])
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[5], ARGV[4], ARGV[5])
  redis.call('SADD', KEYS[6], ARGV[6])
end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
index_add(KEYS[4], KEYS[3], ARGV[10])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[3]))
return {1}
"""

# Store a new code only under the generation its consent decision saw, and list its family
# in the person-shop index (withdrawal then knows something was outstanding).
# KEYS[1] code, KEYS[2] grant, KEYS[3] the person's erasure marker, KEYS[4] the index.
# ARGV[1] expected generation ('' = no grant yet: this code starts generation 1), ARGV[2]
# value, ARGV[3] ttl, ARGV[4] the family key, ARGV[5] the index's ttl, ARGV[6] the person's
# family key without the id.
_ISSUE = _FAMILIES + """
if redis.call('EXISTS', KEYS[3]) == 1 then return -2 end
local gen = redis.call('GET', KEYS[2])
if not gen then
  if ARGV[1] ~= '' then return -1 end
  redis.call('SET', KEYS[2], '1')
elseif gen ~= ARGV[1] then
  return -1
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
index_add(KEYS[4], ARGV[4], ARGV[6])
if redis.call('TTL', KEYS[4]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5])) end
return 1
"""

# KEYS[1] a family. ARGV[1] ttl of the dead marker, ARGV[2] the key prefix.
_REVOKE_FAMILY = _FAMILIES + """
kill(KEYS[1], tonumber(ARGV[1]), ARGV[2])
return 1
"""

# KEYS[1] a person-shop family index. ARGV[1] ttl of the dead markers, ARGV[2] the key prefix,
# ARGV[3] the person's family key without the id. Returns the count.
_REVOKE_INDEX = _FAMILIES + """
local families
if redis.call('TYPE', KEYS[1]).ok == 'set' then
  families = redis.call('SMEMBERS', KEYS[1])
else
  families = redis.call('HKEYS', KEYS[1])
end
for _, entry in ipairs(families) do kill(index_family(entry, ARGV[3]), tonumber(ARGV[1]), ARGV[2]) end
redis.call('DEL', KEYS[1])
return #families
"""


class Peek(enum.Enum):
    UNKNOWN = 0  # never existed, expired or revoked
    LIVE = 1  # unused, its grant and family live
    USED = 2  # taken before (for a code or refresh token presented again: a replay)
    STALE = 3  # its grant changed (withdrawal, narrowing, erasure) or its family is dead
    REPEAT = 4  # taken moments ago, its sealed answer kept: the same request again


class Exchange(enum.Enum):
    UNKNOWN = 0
    DONE = 1
    REPLAYED = 2  # taken meanwhile by another request: the family is now dead
    STALE = 3
    REPEATED = 4  # taken moments ago by the same request, whose kept answer comes back


class Issue(enum.Enum):
    DONE = 1
    STALE = -1  # the grant changed since the consent decision was read
    ERASED = -2


@dataclass(frozen=True, slots=True)
class NewToken:
    key: str
    value: str
    ttl: int


@dataclass(frozen=True, slots=True)
class Peeked:
    outcome: Peek
    value: bytes | None = None
    answer: bytes | None = None  # REPEAT: the sealed answer of the exchange


def checked_keys(keys: KeySpace, record: Mapping[str, Any]) -> tuple[str, str] | None:
    """The grant and family keys a stored record (its JSON, decoded) is checked against, as
    ``checked`` in the scripts finds them; None when a record from before compact records
    names none (the scripts then find it stale)."""
    if "gen" in record:  # written before compact records: the names are in the record
        grant, family = record.get("grant_key"), record.get("family_key")
        return (str(grant), str(family)) if grant and family else None
    person = str(record["p"])
    return (str(record.get("G") or keys.person_grant(person, str(record["c"]))),
            str(record.get("F") or keys.token_family(person, str(record["f"]))))


def answer_key(credential_key: str) -> str:
    """Where an exchange keeps its sealed answer for a repeat: beside the credential, in its
    slot."""
    return f"{credential_key}:answer"


@dataclass(frozen=True, slots=True)
class StagedEvent:
    """An audit event to stage with an exchange: the person's outbox and pending set, the
    event's id and canonical JSON (gateway/store/commits.py)."""

    outbox: str
    pending: str
    person_id: str
    event_id: str
    payload: bytes


class GrantScripts:
    """The scripts above, registered once per client (EVALSHA after the first call)."""

    def __init__(self, store: Store) -> None:
        client = store.redis
        self._store = store
        self._keys = store.keys
        self._client = client
        self._cluster = store.cluster
        self._peek = client.register_script(_PEEK)
        self._exchange = LuaScript(client, _EXCHANGE)
        self._issue = client.register_script(_ISSUE)
        self._revoke_family = client.register_script(_REVOKE_FAMILY)
        self._revoke_index = client.register_script(_REVOKE_INDEX)

    def peek(self, key: str, *, family_ttl: int, used_is_replay: bool) -> Peeked:
        """Load a credential without using it; a used one revokes its family if
        ``used_is_replay`` (unless its exchange's answer is still kept: a repeat)."""
        keys = [key, answer_key(key)]
        if self._cluster:
            stored = self._client.get(key)
            if not isinstance(stored, bytes):
                return Peeked(Peek.UNKNOWN)
            checked = checked_keys(self._keys, json.loads(stored.removeprefix(b"!")))
            if checked is not None:  # else the script says STALE
                keys += checked
        reply = cast(list[bytes], self._peek(keys=keys, args=[family_ttl, "1" if used_is_replay else "0",
                                                              self._keys.prefix]))
        return Peeked(Peek(int(reply[0])), *reply[1:3])

    def exchange(self, credential: str, *, grant: str, family: str, family_index: str,
                 generation: int, tombstone_ttl: int, family_ttl: int,
                 tokens: list[NewToken], event: StagedEvent, answer: bytes = b"", answer_ttl: int = 0
                 ) -> tuple[Exchange, bytes | None]:
        """One script; with ``replicas_to_wait`` acknowledged only once replicas have it
        (it stages an audit event, and a promoted replica must not hand back a used token).
        ``answer``: the sealed response kept ``answer_ttl`` seconds for a repeat; returned
        (sealed) with :attr:`Exchange.REPEATED` when the credential was just used with one."""
        args: list[str | bytes | int] = [str(generation), tombstone_ttl, family_ttl, event.event_id,
                                         event.payload, event.person_id, answer, answer_ttl,
                                         self._keys.prefix, self._family_base(event.person_id)]
        for token in tokens:
            args += [token.value, token.ttl]
        keys = [credential, grant, family, family_index, event.outbox, event.pending,
                answer_key(credential), *(t.key for t in tokens)]
        if not self._store.replicas_to_wait:
            reply = cast(list[bytes], self._exchange(keys, args))
        else:
            pipe = self._store.pipeline()
            self._exchange.queue(pipe, keys, args)
            reply = cast(list[bytes], self._store.run_durably(pipe, credential)[0])
        return Exchange(int(reply[0])), (reply[1] if len(reply) > 1 else None)

    def issue(self, key: str, value: str, ttl: int, *, person_id: str, grant: str, erased: str,
              family: str, family_index: str, index_ttl: int, expected_generation: int | None) -> Issue:
        expected = "" if expected_generation is None else str(expected_generation)
        reply = self._issue(keys=[key, grant, erased, family_index],
                            args=[expected, value, ttl, family, index_ttl, self._family_base(person_id)])
        return Issue(int(cast(int, reply)))

    def revoke_family(self, family: str, ttl: int) -> None:
        self._revoke_family(keys=[family], args=[ttl, self._keys.prefix])

    def revoke_index(self, family_index: str, ttl: int, *, person_id: str) -> int:
        reply = self._revoke_index(keys=[family_index],
                                   args=[ttl, self._keys.prefix, self._family_base(person_id)])
        return int(cast(int, reply))

    def _family_base(self, person_id: str) -> str:
        """The person's family key names without the family id: the index lists only ids."""
        return self._keys.token_family(person_id, "")
