"""Atomic single-use operations, each one Lua script (one round trip, no read-then-delete).

``consume_once`` takes a value out of a key exactly once. Instead of deleting the key it
leaves a *tombstone* (the old value behind a ``!`` marker) for a while, so that a second
presentation is recognised as a replay (RFC 6749 §4.1.2, RFC 9700 §4.14.2: a reused code
or refresh token revokes what was issued from it) rather than as an unknown value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import redis

# Values stored through consume_once must not start with "!": JSON objects start with "{".
_CONSUME_ONCE = """
local value = redis.call('GET', KEYS[1])
if not value then
  return {0}
end
if string.sub(value, 1, 1) == '!' then
  return {2, string.sub(value, 2)}
end
redis.call('SET', KEYS[1], '!' .. value, 'EX', tonumber(ARGV[1]))
return {1, value}
"""


class ConsumeOutcome(enum.Enum):
    UNKNOWN = 0  # never existed, or expired
    CONSUMED = 1  # this call took the value; nobody else will
    REPLAYED = 2  # taken before: the caller holds a replayed secret


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    outcome: ConsumeOutcome
    value: bytes | None


class AtomicScripts:
    """The Lua scripts, registered once per connection pool (EVALSHA after the first call)."""

    def __init__(self, client: redis.Redis) -> None:
        self._consume_once = client.register_script(_CONSUME_ONCE)

    def consume_once(self, key: str, tombstone_ttl: int) -> ConsumeResult:
        """Take the value at ``key`` once; later calls see ``REPLAYED`` for ``tombstone_ttl`` s."""
        reply = cast(list[object], self._consume_once(keys=[key], args=[tombstone_ttl]))
        outcome = ConsumeOutcome(int(cast(int, reply[0])))
        value = cast(bytes, reply[1]) if len(reply) > 1 else None
        return ConsumeResult(outcome, value)
