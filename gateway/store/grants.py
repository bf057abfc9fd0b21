"""Grant generations: the Lua scripts that make "consent is checked at every use" atomic.

A *grant* is what one person gave one shop. Its *generation* is an integer in the person's
slot (``{p:<person>}:grant:<shop>``); every code and token records the generation it was
issued under, plus the names of its grant and family keys. A record is live only while

- its grant key holds the same generation (withdrawal and narrowing ``INCR`` it, erasure
  deletes it: a missing grant key means "no grant"), and
- its family set does not hold the ``!dead`` marker (a replayed code or refresh token
  marks the family dead before it deletes the members, so a winner that saves its tokens
  *after* the replay was seen finds the marker and saves nothing).

Each check runs in the same script that loads or writes the credential, so there is no
extra round trip and no window between check and use (docs/architecture.md,
"Consistency"). Records are JSON with ``gen``, ``grant_key`` and ``family_key`` members,
which the scripts read with ``cjson``; used single-use values are kept behind a ``!``
marker as tombstones, so that a second presentation is seen as a replay.

Cluster note: the credential keys are named by the digest of the secret, not by person, so
these scripts touch keys of several slots. That is fine on one server and behind
Sentinel; Redis Cluster needs credentials routed to the person's slot first (issue 22).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import redis

DEAD = "!dead"  # the member that marks a token family as revoked

_KILL_FAMILY = """
local function kill(family, ttl)
  local members = redis.call('SMEMBERS', family)
  for _, member in ipairs(members) do
    if member ~= '!dead' then redis.call('DEL', member) end
  end
  redis.call('DEL', family)
  redis.call('SADD', family, '!dead')
  redis.call('EXPIRE', family, ttl)
end
"""

_LIVE = """
local function live(rec)
  if rec.grant_key == nil or rec.family_key == nil then return false end
  local gen = redis.call('GET', rec.grant_key)
  if not gen or tonumber(gen) ~= tonumber(rec.gen) then return false end
  return redis.call('SISMEMBER', rec.family_key, '!dead') == 0
end
"""

# KEYS[1] credential. ARGV[1] family ttl, ARGV[2] '1' = a used value is a replay (kill its
# family). Returns {outcome, value}.
_PEEK = _KILL_FAMILY + _LIVE + """
local value = redis.call('GET', KEYS[1])
if not value then return {0} end
if string.sub(value, 1, 1) == '!' then
  local used = string.sub(value, 2)
  if ARGV[2] == '1' then kill(cjson.decode(used).family_key, tonumber(ARGV[1])) end
  return {2, used}
end
if not live(cjson.decode(value)) then return {3, value} end
return {1, value}
"""

# Take a code or refresh token and write what it is exchanged for, atomically.
# KEYS[1] credential, KEYS[2] grant, KEYS[3] family, KEYS[4] the person-shop family index,
# KEYS[5..] the new tokens. ARGV[1] expected generation, ARGV[2] tombstone ttl, ARGV[3]
# family ttl, then one (value, ttl) pair per new token.
_EXCHANGE = _KILL_FAMILY + """
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
if string.sub(value, 1, 1) == '!' then
  kill(KEYS[3], tonumber(ARGV[3]))
  return 2
end
local gen = redis.call('GET', KEYS[2])
if not gen or gen ~= ARGV[1] or redis.call('SISMEMBER', KEYS[3], '!dead') == 1 then
  redis.call('DEL', KEYS[1])
  return 3
end
redis.call('SET', KEYS[1], '!' .. value, 'EX', tonumber(ARGV[2]))
for i = 5, #KEYS do
  local at = 4 + (i - 5) * 2
  redis.call('SET', KEYS[i], ARGV[at], 'EX', tonumber(ARGV[at + 1]))
  redis.call('SADD', KEYS[3], KEYS[i])
end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[3]))
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[3]))
return 1
"""

# Store a new code only under the generation its consent decision saw, and list its family
# in the person-shop index (withdrawal then knows something was outstanding).
# KEYS[1] code, KEYS[2] grant, KEYS[3] the person's erasure marker, KEYS[4] the index.
# ARGV[1] expected generation ('' = no grant yet: this code starts generation 1), ARGV[2]
# value, ARGV[3] ttl, ARGV[4] the family key, ARGV[5] the index's ttl.
_ISSUE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -2 end
local gen = redis.call('GET', KEYS[2])
if not gen then
  if ARGV[1] ~= '' then return -1 end
  redis.call('SET', KEYS[2], '1')
elseif gen ~= ARGV[1] then
  return -1
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('SADD', KEYS[4], ARGV[4])
if redis.call('TTL', KEYS[4]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5])) end
return 1
"""

# KEYS[1] a family. ARGV[1] ttl of the dead marker.
_REVOKE_FAMILY = _KILL_FAMILY + """
kill(KEYS[1], tonumber(ARGV[1]))
return 1
"""

# KEYS[1] a person-shop family index. ARGV[1] ttl of the dead markers. Returns the count.
_REVOKE_INDEX = _KILL_FAMILY + """
local families = redis.call('SMEMBERS', KEYS[1])
for _, family in ipairs(families) do kill(family, tonumber(ARGV[1])) end
redis.call('DEL', KEYS[1])
return #families
"""


class Peek(enum.Enum):
    UNKNOWN = 0  # never existed, expired or revoked
    LIVE = 1  # unused, its grant and family live
    USED = 2  # taken before (for a code or refresh token presented again: a replay)
    STALE = 3  # its grant changed (withdrawal, narrowing, erasure) or its family is dead


class Exchange(enum.Enum):
    UNKNOWN = 0
    DONE = 1
    REPLAYED = 2  # taken meanwhile by another request: the family is now dead
    STALE = 3


class Issue(enum.Enum):
    DONE = 1
    STALE = -1  # the grant changed since the consent decision was read
    ERASED = -2


@dataclass(frozen=True, slots=True)
class NewToken:
    key: str
    value: str
    ttl: int


class GrantScripts:
    """The scripts above, registered once per client (EVALSHA after the first call)."""

    def __init__(self, client: redis.Redis) -> None:
        self._peek = client.register_script(_PEEK)
        self._exchange = client.register_script(_EXCHANGE)
        self._issue = client.register_script(_ISSUE)
        self._revoke_family = client.register_script(_REVOKE_FAMILY)
        self._revoke_index = client.register_script(_REVOKE_INDEX)

    def peek(self, key: str, *, family_ttl: int, used_is_replay: bool) -> tuple[Peek, bytes | None]:
        """Load a credential without using it; a used one revokes its family if
        ``used_is_replay``."""
        reply = cast(list[object], self._peek(keys=[key], args=[family_ttl, "1" if used_is_replay else "0"]))
        value = cast(bytes, reply[1]) if len(reply) > 1 else None
        return Peek(int(cast(int, reply[0]))), value

    def exchange(self, credential: str, *, grant: str, family: str, family_index: str,
                 generation: int, tombstone_ttl: int, family_ttl: int,
                 tokens: list[NewToken]) -> Exchange:
        args: list[str | int] = [str(generation), tombstone_ttl, family_ttl]
        for token in tokens:
            args += [token.value, token.ttl]
        reply = self._exchange(keys=[credential, grant, family, family_index, *(t.key for t in tokens)],
                               args=args)
        return Exchange(int(cast(int, reply)))

    def issue(self, key: str, value: str, ttl: int, *, grant: str, erased: str, family: str,
              family_index: str, index_ttl: int, expected_generation: int | None) -> Issue:
        expected = "" if expected_generation is None else str(expected_generation)
        reply = self._issue(keys=[key, grant, erased, family_index],
                            args=[expected, value, ttl, family, index_ttl])
        return Issue(int(cast(int, reply)))

    def revoke_family(self, family: str, ttl: int) -> None:
        self._revoke_family(keys=[family], args=[ttl])

    def revoke_index(self, family_index: str, ttl: int) -> int:
        return int(cast(int, self._revoke_index(keys=[family_index], args=[ttl])))
