"""Scaling out (issue 22, docs/scaling.md): one Redis server against a Redis Cluster of three
primaries (and three replicas), on this machine, in one run.

    python -m bench.scaling [--seconds 8] [--processes 4] [--shards 6] [--name scaling]

Measured through the gateway's own services, with the same Redis options as the gateway:

- audit appends per second: ``--processes`` processes calling ``AuditService.record`` back
  to back (one append round trip, a signed checkpoint every 1,000 events per shard), for
  events of random people; one shard on the single server, one shard on the cluster (all
  appends on one primary), and ``--shards`` shards on the cluster (spread over the three);
- code redemptions per second: each one issues a code (the grant script), peeks it and
  exchanges it for an access and a refresh token with its staged audit event, then relays
  the event (what a sign-in's last step costs Redis), for random people;
- Redis bytes per audit event with the entries in Redis and after ``archive`` moved them to
  a file (the Merkle tree's hashes and the indexes stay).

Both Redis set-ups are throwaway servers on loopback ports with append-only files fsynced
every second (as in production), each primary with one replica, started and stopped here.
The machine's cores are shared by the clients and the servers, so the rates are this
machine's; the Redis CPU per operation (``INFO cpu`` of the primaries, over the operations)
is what a sizing can take from here. Results: ``bench/results/<name>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.redis_meter import escape_pattern, memory_usage, redis_cpu_seconds, scan_keys

RESULTS = Path(__file__).resolve().parent / "results"
ORIGIN = "bench.invalid/audit"


def _store(url: str, cluster: bool, prefix: str) -> Any:
    from gateway.store import Store
    from gateway.store.connection import cluster_client, redis_client

    return Store(cluster_client(url) if cluster else redis_client(url), prefix)


def _append_worker(url: str, cluster: bool, prefix: str, keys_dir: str, shards: int, seconds: float,
                   results: Any) -> None:
    from gateway.audit import AuditEvent, AuditService

    store = _store(url, cluster, prefix)
    service = AuditService(store, Path(keys_dir), ORIGIN, shards=shards)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        person = secrets.token_hex(8)
        service.record(AuditEvent(actor_type="shop", actor_id="bench-shop", action="userinfo_read",
                                  person=person, shop="bench-shop", fields=("email", "nickname"),
                                  purpose="account", policy_version="1", request_id=f"r{count}"))
        count += 1
    results.put(count)
    store.close()


def _redeem_worker(url: str, cluster: bool, prefix: str, keys_dir: str, shards: int, seconds: float,
                   results: Any) -> None:
    from gateway.audit import AuditService
    from gateway.audit.events import AuditEvent
    from gateway.audit.relay import OutboxRelay, stage
    from gateway.oidc.tokens import AuthorizationCode, TokenService, new_family
    from gateway.store.grants import Exchange
    from gateway.store.slots import CredentialRouting

    store = _store(url, cluster, prefix)
    audit = AuditService(store, Path(keys_dir), ORIGIN, shards=shards)
    relay = OutboxRelay(store, audit)
    tokens = TokenService(store, CredentialRouting(b"bench" * 8), code_ttl=60, access_ttl=3600,
                          refresh_ttl=86400)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        person = secrets.token_hex(16)
        code = tokens.new_credential(person)
        tokens.issue_code(code, AuthorizationCode(
            client_id="bench-shop", person_id=person, redirect_uri="https://shop.invalid/cb",
            scope="openid profile", family=new_family(), auth_time=int(time.time())), None)
        record = tokens.peek_code(code)
        if record is None:
            raise RuntimeError("the code just issued is not there")
        grant = {"access_token": tokens.new_credential(person),
                 "refresh_token": tokens.new_credential(person), "scope": record.scope}
        event = stage(AuditEvent(actor_type="shop", actor_id="bench-shop", action="token_issued",
                                 person=person, shop="bench-shop"))
        if tokens.exchange(record, grant, event) is not Exchange.DONE:
            raise RuntimeError("the exchange of a fresh code failed")
        relay.flush(person)
        count += 1
    results.put(count)
    store.close()


def _run(worker: Callable[..., None], processes: int, *args: Any) -> int:
    context = multiprocessing.get_context("spawn")
    results: Any = context.Queue()
    started = [context.Process(target=worker, args=(*args, results)) for _ in range(processes)]
    for process in started:
        process.start()
    total = sum(results.get(timeout=300) for _ in started)
    for process in started:
        process.join(timeout=60)
    return total


def _primary_clients(url: str, cluster: bool) -> list[Any]:
    import redis

    if not cluster:
        return [redis.Redis.from_url(url)]
    from gateway.store.connection import cluster_client

    nodes = cluster_client(url)
    return [redis.Redis(host=node.host, port=node.port) for node in nodes.get_primaries()]


def _timed(url: str, cluster: bool, worker: Callable[..., None], processes: int, *args: Any
           ) -> tuple[int, float, list[float]]:
    """Operations done, and the Redis CPU seconds they cost: in all, and on each primary."""
    primaries = _primary_clients(url, cluster)
    before = [redis_cpu_seconds(client) for client in primaries]
    done = _run(worker, processes, *args)
    spent = [redis_cpu_seconds(client) - start for client, start in zip(primaries, before, strict=True)]
    for client in primaries:
        client.close()
    return done, sum(spent), spent


def _audit_bytes(url: str, cluster: bool, prefix: str, keys_dir: str, shards: int) -> dict[str, Any]:
    """Redis bytes of every audit key per event, then again after archiving every shard up to
    its latest checkpoint."""
    from gateway.audit import AuditService
    from gateway.audit.archive import Archiver

    store = _store(url, cluster, prefix)
    try:
        service = AuditService(store, Path(keys_dir), ORIGIN, shards=shards)
        events = sum(shard.log.size() for shard in service.shards)
        before = _bytes(store, prefix)
        for shard in service.shards:
            shard.checkpointer.checkpoint()
            archiver = Archiver(shard.log, shard.checkpointer)
            start, stop = archiver.segment(shard.log.size())
            if stop > start:
                for _ in archiver.lines(start, stop):
                    pass  # written to a file by `gateway audit archive`; only its cost matters here
                archiver.drop(start, stop)
        after = _bytes(store, prefix)
    finally:
        store.close()
    return {"events": events, "bytes_per_event": round(before / events, 1) if events else None,
            "bytes_per_event_archived": round(after / events, 1) if events else None}


def _bytes(store: Any, prefix: str) -> int:
    """MEMORY USAGE of every audit key (all shards' ``{audit…}`` keys), on every primary."""
    pattern = f"{escape_pattern(prefix)}{{audit*"
    clients = ([store.redis.get_redis_connection(node) for node in store.redis.get_primaries()]
               if store.cluster else [store.redis])
    return sum(sum(memory_usage(client, scan_keys(client, pattern)).values()) for client in clients)


def measure(seconds: float, processes: int, shards: int) -> dict[str, Any]:
    from tests.redis_server import ClusterGroup, RedisServer

    with tempfile.TemporaryDirectory(prefix="cg-scaling-") as scratch:
        root = Path(scratch)
        keys_dir = root / "keys"
        keys_dir.mkdir()
        from gateway.audit import load_audit_keys

        load_audit_keys(keys_dir, ORIGIN)  # created once, before the workers read them
        # Both append-only, fsynced every second (the production default, docs/operations.md).
        everysec = ["--appendfsync", "everysec"]
        single = RedisServer(root / "single", extra_args=everysec).start()
        # With a replica of its own, like every primary of the cluster (feeding it costs CPU).
        replica = RedisServer(root / "replica", extra_args=[*everysec, "--replicaof", "127.0.0.1",
                                                             str(single.port)]).start()
        cluster = ClusterGroup(root / "cluster", server_args=everysec).start()
        try:
            setups = [("1 server (+ replica), 1 shard", single.url, False, 1),
                      ("cluster (3 primaries), 1 shard", cluster.seed_url, True, 1),
                      (f"cluster (3 primaries), {shards} shards", cluster.seed_url, True, shards)]
            rows = []
            for label, url, is_cluster, k in setups:
                prefix = f"cgscale:{secrets.token_hex(4)}:"
                common = (url, is_cluster, prefix, str(keys_dir), k, seconds)
                appended, append_cpu, append_split = _timed(url, is_cluster, _append_worker, processes,
                                                            *common)
                redeemed, redeem_cpu, _ = _timed(url, is_cluster, _redeem_worker, processes, *common)
                sizes = _audit_bytes(url, is_cluster, prefix, str(keys_dir), k)
                rows.append({"setup": label, "shards": k, "processes": processes,
                             "appends_per_s": round(appended / seconds, 1),
                             "append_redis_cpu_us": _micros(append_cpu, appended),
                             "append_cpu_split": [round(x / max(append_cpu, 1e-9), 2) for x in append_split],
                             "redemptions_per_s": round(redeemed / seconds, 1),
                             "redemption_redis_cpu_us": _micros(redeem_cpu, redeemed),
                             **sizes})
        finally:
            cluster.stop()
            replica.kill()
            single.kill()
    return {"seconds": seconds, "processes": processes, "rows": rows,
            "machine": _machine()}


def _micros(seconds: float, count: int) -> float | None:
    return round(seconds / count * 1e6, 1) if count else None


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def report(result: dict[str, Any]) -> str:
    lines = [f"# Scaling out: one server vs a Redis Cluster ({result['machine']})", "",
             f"{result['processes']} client processes, {result['seconds']} s per cell; "
             "`python -m bench.scaling` (bench/scaling.py).", "",
             "| setup | audit appends/s | Redis CPU per append (µs) | share of it per primary | "
             "code redemptions/s | Redis CPU per redemption (µs) | Redis bytes per audit event | "
             "after archiving |", "|---|--:|--:|---|--:|--:|--:|--:|"]
    for row in result["rows"]:
        split = " / ".join(f"{share:.0%}" for share in row["append_cpu_split"])
        lines.append(f"| {row['setup']} | {row['appends_per_s']:,} | {row['append_redis_cpu_us']} | "
                     f"{split} | "
                     f"{row['redemptions_per_s']:,} | {row['redemption_redis_cpu_us']} | "
                     f"{row['bytes_per_event']} | {row['bytes_per_event_archived']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--name", default="scaling")
    args = parser.parse_args()
    publish(args.name, measure(args.seconds, args.processes, args.shards), report)


def publish(name: str, result: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """Write ``bench/results/<name>.json`` and the rendered ``<name>.md``, and print the latter."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
