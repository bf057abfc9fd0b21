"""The sizing table of docs/scaling.md, multiplied out from measured figures.

    python -m bench.sizing --person-bytes 2600 --sign-in-us 1400 [--scaling bench/results/scaling.json]

Inputs: Redis bytes per person at one shop (docs/performance.md, "Memory"), Redis CPU per
sign-in on a cluster (docs/scaling.md), and the audit figures of ``bench/results/scaling.json``
(``python -m bench.scaling``). Everything else is a stated assumption, printed with the table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

PRIMARY_CPU = 0.70  # of one core: Redis runs commands on one thread
PRIMARY_BYTES = 25e9  # data per primary on a 32 GB machine
EVENTS_PER_PERSON_DAY = 10
DAYS = 30  # the table's moment: a month after the start, archiving every day
MIN_PRIMARIES = 3  # a cluster's minimum


def table(person_bytes: float, sign_in_us: float, event_bytes: float, archived_event_bytes: float,
          append_us: float) -> str:
    rows = ["| people | sign-ins/s | people's records | audit after 30 days (archived daily) | "
            "audit growth per day | primaries for memory | primaries for CPU | primaries | "
            "primaries with a tiered audit log (not built) |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for people in (1e6, 10e6, 500e6):
        for rate in (1_000, 10_000):
            records = people * person_bytes
            events_per_day = people * EVENTS_PER_PERSON_DAY
            # Archiving moves entries to files, but their tree hashes and index entries stay.
            audit = events_per_day * (event_bytes + (DAYS - 1) * archived_event_bytes)
            tail = events_per_day * event_bytes  # what a tiered log would keep: the day's entries
            for_memory = math.ceil((records + audit) / PRIMARY_BYTES)
            # A sign-in's four events are in its measured cost; the day's other events (refresh,
            # userinfo, consent changes) are appends of their own.
            other_appends = max(0.0, events_per_day / 86400 - rate * 4)
            for_cpu = math.ceil((rate * sign_in_us + other_appends * append_us) * 1e-6 / PRIMARY_CPU)
            tiered = max(MIN_PRIMARIES, math.ceil((records + tail) / PRIMARY_BYTES), for_cpu)
            rows.append(f"| {_count(people)} | {rate:,} | {_bytes(records)} | {_bytes(audit)} | "
                        f"{_bytes(events_per_day * archived_event_bytes)} | {for_memory:,} | {for_cpu:,} | "
                        f"{max(MIN_PRIMARIES, for_memory, for_cpu):,} | {tiered:,} |")
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
    args = parser.parse_args()
    rows = json.loads(args.scaling.read_text())["rows"]
    cluster = next(row for row in rows if row["shards"] > 1)
    print(table(args.person_bytes, args.sign_in_us, cluster["bytes_per_event"],
                cluster["bytes_per_event_archived"], cluster["append_redis_cpu_us"]))


if __name__ == "__main__":
    main()
