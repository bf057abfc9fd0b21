"""Rate limits held in Redis, so they hold across workers and hosts (docs/threat-model.md).

Each limit is a GCRA bucket (the generic cell rate algorithm, as in ATM networks and
redis-cell): one key per subject holds the *theoretical arrival time* of its next request,
in milliseconds of the Redis server's clock (``TIME``, so the workers' clocks never matter).
A request is allowed while that time is less than ``burst`` intervals ahead of now; each
allowed request moves it one interval on. One key and one number per subject, expiring when
the bucket is full again: an idle subject costs nothing.

Several limits for one request (per IP and per client, say) are one pipeline (redis-py adds a
``SCRIPT EXISTS`` round trip to a pipeline that carries scripts; one limit is one call).
Each bucket is its own script call, never one script over several keys, so on Redis Cluster
the keys may live in different slots. The price: a request refused by one bucket has still
spent a token from the others, which errs on the strict side.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from gateway.config import Settings
from gateway.config.settings import RateLimit
from gateway.store.scripts import LuaScript

if TYPE_CHECKING:
    import redis

    from gateway.store.keys import KeySpace

# KEYS[1] the bucket; ARGV[1] the interval (ms per request), ARGV[2] the tolerance (ms: burst
# intervals). Returns the milliseconds until this request would be allowed (> 0: refused), or,
# when it was allowed, minus the milliseconds the bucket now stays empty (0: tokens are left).
_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - tonumber(ARGV[2]) - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now)
local empty = next_tat + interval - tonumber(ARGV[2]) - now
if empty > 0 then return -empty end
return 0
"""

# The same test without spending: milliseconds until one request would be allowed (0: now).
_PEEK = """
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat + tonumber(ARGV[1]) - tonumber(ARGV[2]) - now
if wait > 0 then return wait end
return 0
"""


@dataclass(frozen=True, slots=True)
class Spent:
    """What one :meth:`RateLimits.take` did to each bucket, in the order of the hits."""

    waits: tuple[float, ...]  # seconds until the request would be allowed (0.0: it was)
    empty: tuple[float, ...]  # seconds the bucket stays empty after this request (0.0: tokens left)

    @property
    def retry_after(self) -> float:
        """0.0 when every bucket allowed the request, else the longest wait."""
        return max(self.waits, default=0.0)

    def blocked_for(self, index: int) -> float:
        """Seconds the hit's bucket refuses everything from now on (refused or just emptied)."""
        return max(self.waits[index], self.empty[index])


@dataclass(frozen=True, slots=True)
class Limit:
    """A named limit (``authorize-ip``) and its rate; the name is part of the key."""

    name: str
    rate: RateLimit

    @property
    def interval_ms(self) -> int:
        return max(1, math.ceil(self.rate.per_seconds * 1000 / self.rate.count))


def subject_digest(subject: str) -> str:
    """Subjects (IP addresses, shop and person IDs) are hashed into the key: bounded length,
    no key-name injection, and a dump of Redis does not list who signed in from where."""
    return hashlib.sha256(subject.encode()).hexdigest()[:32]


class RateLimits:
    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self._client = client
        self._keys = keys
        self._take = LuaScript(client, _TAKE)
        self._peek = LuaScript(client, _PEEK)

    def take(self, hits: Sequence[tuple[Limit, str]]) -> Spent:
        """Spend one request from each ``(limit, subject)`` bucket, in one round trip."""
        replies = self._run(self._take, hits)
        return Spent(tuple(max(0, r) / 1000.0 for r in replies), tuple(max(0, -r) / 1000.0 for r in replies))

    def peek(self, hits: Sequence[tuple[Limit, str]]) -> Spent:
        """Whether each bucket would allow one request now, spending nothing (one round trip)."""
        replies = self._run(self._peek, hits)
        return Spent(tuple(r / 1000.0 for r in replies), tuple(0.0 for _ in replies))

    def _run(self, script: LuaScript, hits: Sequence[tuple[Limit, str]]) -> list[int]:
        calls = [([self._keys.rate_limit(limit.name, subject_digest(subject))],
                  [limit.interval_ms, limit.interval_ms * limit.rate.burst]) for limit, subject in hits]
        if len(calls) == 1:  # EVALSHA: the source is not sent
            keys, args = calls[0]
            return [int(cast(int, script(keys, args)))]
        # One round trip (on a cluster: one per node, side by side); each bucket its own call.
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            script.queue(pipe, keys, args)
        return [int(reply) for reply in cast(list[int], pipe.execute())]  # none queued: no round trip


class RateLimitedError(Exception):
    """A request over its limit: answered 429 with ``Retry-After`` in the route's format."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after


def spend(settings: Settings, limits: RateLimits, limit: Limit, subject: str) -> None:
    """Spend one request of ``subject`` (a person, an authenticated shop) inside a route, or
    raise :class:`RateLimitedError` (synchronous: in a worker thread)."""
    if not settings.rate_limits:
        return
    wait = limits.take([(limit, subject)]).retry_after
    if wait > 0:
        raise RateLimitedError(wait)


# The buckets the routes spend themselves (the edge's are in gateway/web/limits.py).
def account_writes(settings: Settings) -> Limit:
    return Limit("account-person", settings.rate_limit_account_writes_per_person)


def mini_program_shop(settings: Settings) -> Limit:
    return Limit("miniprogram-shop", settings.rate_limit_miniprogram_per_shop)


def pushed_requests(settings: Settings) -> Limit:
    return Limit("par-shop", settings.rate_limit_par_per_shop)
