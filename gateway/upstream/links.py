"""The link index: which provider links (``link:<namespace>:<digest>``, gateway/store/keys.py)
belong to a person, so that erasure can forget them.

One hash per person (``{p:<person>}:links``) of subject digest -> namespace: 64 hex characters
and a short namespace, which Redis keeps in its compact listpack encoding, where a set of the
full key names (as written before) is a hash table, 344 bytes for one member on Redis 7.0. An
index written before as a set is read as it is and rewritten as a hash when the next link is
added. The link keys themselves lie in other slots; the scripts here only name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from gateway.store.scripts import LuaScript

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

    from gateway.store.keys import KeySpace

# A link key name without the link prefix: its namespace (which may hold ':') and its digest.
_SPLIT = """
local function split(name, link_prefix)
  return string.match(string.sub(name, #link_prefix + 1), '^(.*):(%x+)$')
end
"""

# KEYS[1] the index. ARGV[1] the link key prefix, then the link key names to add.
_ADD = _SPLIT + """
if redis.call('TYPE', KEYS[1]).ok == 'set' then
  local members = redis.call('SMEMBERS', KEYS[1])
  redis.call('DEL', KEYS[1])
  for _, member in ipairs(members) do
    local namespace, digest = split(member, ARGV[1])
    redis.call('HSET', KEYS[1], digest, namespace)
  end
end
for i = 2, #ARGV do
  local namespace, digest = split(ARGV[i], ARGV[1])
  redis.call('HSET', KEYS[1], digest, namespace)
end
return 1
"""

# KEYS[1] the index. ARGV[1] the link key prefix. Returns the link key names.
_READ = """
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SMEMBERS', KEYS[1]) end
local entries = redis.call('HGETALL', KEYS[1])
local names = {}
for i = 1, #entries, 2 do names[#names + 1] = ARGV[1] .. entries[i + 1] .. ':' .. entries[i] end
return names
"""


class LinkIndex:
    """Adds to and reads a person's link index (either format)."""

    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self._keys = keys
        self._add = LuaScript(client, _ADD)
        self._read = LuaScript(client, _READ)

    def queue_add(self, pipe: Pipeline, person_id: str, link_keys: Sequence[str]) -> None:
        """Add ``link_keys`` (names made by ``KeySpace.person_link``) in ``pipe``."""
        self._add.queue(pipe, [self._keys.person_links(person_id)], [self._keys.link_prefix(), *link_keys])

    def link_keys(self, person_id: str) -> list[str]:
        """The names of every link key the person's index lists."""
        index = self._keys.person_links(person_id)
        names = cast(list[bytes], self._read([index], [self._keys.link_prefix()]))
        return [name.decode() for name in names]
