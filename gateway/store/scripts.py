"""Lua scripts: EVALSHA when run alone, EVAL with the source inside a pipeline.

Alone, a script is sent as EVALSHA and redis-py loads it where the server answers NOSCRIPT
(a new server, a promoted replica: SCRIPT LOAD is not replicated), then runs it again, which
is safe because a NOSCRIPT reply means nothing ran. Inside a pipeline that fallback does not
exist on Redis Cluster (a cluster pipeline cannot load scripts; the EVALSHA fails on any
primary that has not seen the script, for instance right after a failover), and on one
server redis-py checks every pipeline's scripts with SCRIPT EXISTS first, one more round
trip. So pipelines carry ``EVAL`` with the source (one to three kilobytes), which Redis
compiles once and keeps in its script cache: no extra round trip, no NOSCRIPT, every mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

Arg = str | bytes | int | float


class LuaScript:
    """One script, registered with a client (standalone, Sentinel or cluster)."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.source = source
        self._script = client.register_script(source)

    def __call__(self, keys: Sequence[str], args: Sequence[Arg] = ()) -> Any:
        """Run it now (one round trip; its keys must share a slot)."""
        return self._script(keys=list(keys), args=list(args))

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Arg] = ()) -> None:
        """Add it to ``pipe``; its reply comes with the pipeline's."""
        cast(Any, pipe).execute_command("EVAL", self.source, len(keys), *keys, *args)
