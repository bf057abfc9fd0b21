"""The audit log's cold tier (issue 22, docs/audit.md "Tiers"): Redis memory stays flat while
the log grows, and what reading the cold tier costs.

    python -m bench.tiering [--chunks 4] [--hot 65536] [--processes 2] [--name tiering]

One shard with the production shapes (gateway/audit/cold.py: tiles of 256 hashes, chunks of
65,536 entries) and ``--hot`` entries kept in Redis. The log grows a chunk at a time: appended
by ``--processes`` processes, sealed and signed (one checkpoint), then moved by the same
``Tiering`` the checkpoint thread runs. After each step it records the log's size, the Redis
bytes of every audit key (``MEMORY USAGE``), the cold files' bytes and how long the move
took. At the end it times inclusion proofs for entries in each tier, a query by person that
reads both, and a full ``verify_log`` (which re-reads every cold object).

Uses the Redis at ``--redis-url`` (default ``$GATEWAY_REDIS_URL``, else an embedded one) under
a fresh key prefix that is deleted afterwards, and a temporary cold directory. Results:
``bench/results/<name>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.audit_bench import PERSONS, _redis_url, append_range, timed
from bench.redis_meter import delete_prefix, escape_pattern, memory_usage, scan_keys
from bench.scaling import _machine, publish
from gateway.audit import AuditFilter, AuditService, verify_log
from gateway.audit.cold import CHUNK_ENTRIES
from gateway.store import Store

ORIGIN = "bench.example/audit"  # bench.audit_bench's: its append_range loads the same keys


def _cold_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def _redis_bytes(store: Store, prefix: str) -> dict[str, int]:
    """``MEMORY USAGE`` of the shard's keys, summed by kind (``entries``, ``tile``, ``idx``, …)."""
    client = store.redis
    kinds: dict[str, int] = {}
    for key, size in memory_usage(client, scan_keys(client, f"{escape_pattern(prefix)}{{audit*")).items():
        kind = key[len(prefix):].split(":")[1]
        kinds[kind] = kinds.get(kind, 0) + size
    return kinds


def _append(url: str, prefix: str, keys_dir: str, start: int, count: int, processes: int) -> None:
    share = count // processes
    parts = [(start + i * share, share if i < processes - 1 else count - share * i) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.starmap(append_range, [(url, prefix, keys_dir, s, c) for s, c in parts])


def measure(url: str, chunks: int, hot: int, processes: int, samples: int) -> dict[str, Any]:
    prefix = f"cgbench:{secrets.token_hex(4)}:"
    keys_dir = tempfile.mkdtemp(prefix="cg-tier-keys-")
    cold_dir = Path(tempfile.mkdtemp(prefix="cg-tier-cold-"))
    store = Store(redis.Redis.from_url(url), prefix)
    service = AuditService(store, Path(keys_dir), ORIGIN, cold_dir=cold_dir, hot_entries=hot)
    shard = service.shards[0]
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"chunk_entries": CHUNK_ENTRIES, "hot_entries": hot, "steps": steps}
    try:
        size = 0
        for _ in range(chunks):
            began = time.perf_counter()
            _append(url, prefix, keys_dir, size, CHUNK_ENTRIES, processes)
            appended = time.perf_counter() - began
            size += CHUNK_ENTRIES
            began = time.perf_counter()
            signed = shard.checkpointer.checkpoint()
            signing = time.perf_counter() - began
            if signed is None or signed.checkpoint.size != size:
                raise SystemExit("checkpoint not signed")
            began = time.perf_counter()
            moved = service.move_to_cold_tier(max_chunks=None)
            moving = time.perf_counter() - began
            steps.append({
                "size": size, "cold_size": shard.log.cold_size(), "chunks_moved": len(moved),
                "append_per_s": round(CHUNK_ENTRIES / appended), "seal_sign_s": round(signing, 2),
                "move_s": round(moving, 2), "redis_bytes_by_kind": (kinds := _redis_bytes(store, prefix)),
                "redis_bytes": sum(kinds.values()),
                "cold_bytes": _cold_bytes(cold_dir)})

        log, cold = shard.log, shard.log.cold_size()
        rng = random.Random(1)  # noqa: S311 - which entries to time, not secrets
        result["inclusion_proof_cold_ms"] = timed(
            lambda: log.inclusion_proof(rng.randrange(cold), size), samples)
        result["inclusion_proof_hot_ms"] = timed(
            lambda: log.inclusion_proof(rng.randrange(cold, size), size), samples)
        query = service.query
        result["query_by_person_ms"] = timed(
            lambda: query.page(AuditFilter(person=f"p{rng.randrange(PERSONS):05d}"), 0, limit=100),
            max(20, samples // 4))
        began = time.perf_counter()
        report = verify_log(log)
        result["verify_s"] = round(time.perf_counter() - began, 1)
        if not report.ok:
            raise SystemExit(f"verify failed: {report.problem}")
        result["verified_size"] = size
    finally:
        delete_prefix(store.redis, prefix)
        store.close()
        shutil.rmtree(cold_dir, ignore_errors=True)
        shutil.rmtree(keys_dir, ignore_errors=True)
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        f"# Audit cold tier ({result['machine']})", "",
        f"One shard, chunks of {result['chunk_entries']:,} entries, {result['hot_entries']:,} kept in Redis "
        f"(`python -m bench.tiering`).", "",
        "| log size | in Redis | Redis audit bytes | bytes per hot entry | cold bytes | cold bytes per entry "
        "| appends/s | seal + sign | move |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for step in result["steps"]:
        hot = step["size"] - step["cold_size"]
        per_cold = f"{step['cold_bytes'] / step['cold_size']:.0f}" if step["cold_size"] else "–"
        lines.append(
            f"| {step['size']:,} | {hot:,} | {step['redis_bytes'] / 2**20:.1f} MiB | "
            f"{step['redis_bytes'] / hot:.0f} | {step['cold_bytes'] / 2**20:.1f} MiB | {per_cold} | "
            f"{step['append_per_s']:,} | {step['seal_sign_s']:.1f} s | "
            f"{step['move_s']:.1f} s ({step['chunks_moved']} chunks) |")
    lines += ["", "| read | median | p95 |", "|---|--:|--:|"]
    for label, name in (("inclusion proof, entry in the cold tier", "inclusion_proof_cold_ms"),
                        ("inclusion proof, entry in Redis", "inclusion_proof_hot_ms"),
                        ("page of 100 by person (both tiers)", "query_by_person_ms")):
        lines.append("| {} | {:.2f} ms | {:.2f} ms |".format(label, *result[name]))
    lines += [
        "", f"`verify_log` over all {result['verified_size']:,} entries (every cold object re-read and "
        f"checked): {result['verify_s']:.1f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=4, help="chunks of 65,536 entries to append")
    parser.add_argument("--hot", type=int, default=CHUNK_ENTRIES, help="entries kept in Redis")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--name", default="tiering")
    args = parser.parse_args()
    url, embedded = _redis_url(args.redis_url)
    try:
        result = measure(url, args.chunks, args.hot, args.processes, args.samples)
    finally:
        if embedded is not None:
            embedded.shutdown()
    result["machine"] = _machine()
    publish(args.name, result, report)


if __name__ == "__main__":
    main()
