"""The sizing table of docs/scaling.md, multiplied out from measured figures.

    python -m bench.sizing --person-bytes 2600 --sign-in-us 1400 \
        [--scaling bench/results/scaling.json] [--tiering bench/results/tiering.json]

Inputs: Redis bytes per person at one shop (docs/performance.md, "Memory"), Redis CPU per
sign-in on a cluster (docs/scaling.md), the audit figures of ``bench/results/scaling.json``
(``python -m bench.scaling``: append cost, bytes per event in Redis) and of
``bench/results/tiering.json`` (``python -m bench.tiering``: Redis bytes per hot entry, cold
bytes per entry). Everything else is a stated assumption, printed with the table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PRIMARY_CPU = 0.70  # of one core: Redis runs commands on one thread
PRIMARY_BYTES = 25e9  # data per primary on a 32 GB machine
EVENTS_PER_PERSON_DAY = 10
DAYS = 30  # the table's moment: a month after the start
MIN_PRIMARIES = 3  # a cluster's minimum
HOT_ENTRIES = 262_144  # GATEWAY_AUDIT_HOT_ENTRIES' default
CHUNK_ENTRIES = 65_536  # gateway/audit/cold.py: what moves at once
UNSIGNED_ENTRIES = 1_000  # GATEWAY_AUDIT_CHECKPOINT_EVENTS: the backlog not yet signed


def table(person_bytes: float, sign_in_us: float, event_bytes: float, hot_event_bytes: float,
          cold_event_bytes: float, append_us: float) -> str:
    rows = ["| people | sign-ins/s | people's records | audit in Redis, cold tier | cold tier after 30 days "
            "| primaries for memory | primaries for CPU | primaries (= audit shards) "
            "| audit in Redis after 30 days without the cold tier |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for people in (1e6, 10e6, 500e6):
        for rate in (1_000, 10_000):
            records = people * person_bytes
            events_per_day = people * EVENTS_PER_PERSON_DAY
            # A sign-in's four events are in its measured cost; the day's other events (refresh,
            # userinfo, consent changes) are appends of their own.
            other_appends = max(0.0, events_per_day / 86400 - rate * 4)
            for_cpu = math.ceil((rate * sign_in_us + other_appends * append_us) * 1e-6 / PRIMARY_CPU)
            # One audit shard per primary (docs/scaling.md): each keeps its hot tail, the chunk
            # being moved and the unsigned backlog, whatever the log's length.
            shards = primaries = max(MIN_PRIMARIES, for_cpu)
            while True:
                hot = shards * (HOT_ENTRIES + CHUNK_ENTRIES + UNSIGNED_ENTRIES) * hot_event_bytes
                for_memory = math.ceil((records + hot) / PRIMARY_BYTES)
                if for_memory <= shards:
                    break
                shards = primaries = for_memory
            untiered = events_per_day * DAYS * event_bytes
            rows.append(f"| {_count(people)} | {rate:,} | {_bytes(records)} | {_bytes(hot)} | "
                        f"{_bytes(events_per_day * DAYS * cold_event_bytes)} on disk | {for_memory:,} | "
                        f"{for_cpu:,} | {primaries:,} | {_bytes(untiered)} |")
    return "\n".join(rows)


def _count(people: float) -> str:
    return f"{people / 1e6:,.0f} M"


def _bytes(size: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size:,.0f} B"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--person-bytes", type=float, required=True)
    parser.add_argument("--sign-in-us", type=float, required=True)
    parser.add_argument("--scaling", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "scaling.json")
    parser.add_argument("--tiering", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "tiering.json")
    args = parser.parse_args()
    rows = json.loads(args.scaling.read_text())["rows"]
    cluster = next(row for row in rows if row["shards"] > 1)
    steps = json.loads(args.tiering.read_text())["steps"]
    moved = [step for step in steps if step["cold_size"]]
    # The largest Redis figure once chunks move (the tail's memory, all kinds of keys), and the
    # files' bytes per entry they hold.
    hot = max(step["redis_bytes"] / (step["size"] - step["cold_size"]) for step in moved)
    cold = moved[-1]["cold_bytes"] / moved[-1]["cold_size"]
    print(table(args.person_bytes, args.sign_in_us, cluster["bytes_per_event"], hot, cold,
                cluster["append_redis_cpu_us"]))


if __name__ == "__main__":
    main()
