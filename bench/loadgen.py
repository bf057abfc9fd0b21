"""Closed-loop load: N asyncio tasks, each sending its next request when the last one ended.

No threads: every virtual client is a coroutine on one event loop sharing one pooled HTTP
client. A cell runs for a duration (and at most a number of requests); an operation that runs
out of pre-minted input raises :class:`PoolExhausted`, which ends that client early and is
reported with the cell.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx

from bench.browser import FlowError

#: One request (or one whole sign-in) of a virtual client; the argument is the client's number.
Operation = Callable[[int], Awaitable[None]]


class PoolExhausted(Exception):
    """No pre-minted input left (codes for the token cell)."""


@dataclass(slots=True)
class Samples:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    exhausted: bool = False

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": self.ok,
            "errors": self.error_count,
            "error_examples": [f"{count}× {message}" for message, count in self.errors.most_common(3)],
            "elapsed_s": round(self.elapsed, 3),
            "rps": round(self.ok / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            "mean_ms": round(1000 * sum(ordered) / len(ordered), 2) if ordered else None,
            "p50_ms": percentile_ms(ordered, 0.50),
            "p95_ms": percentile_ms(ordered, 0.95),
            "p99_ms": percentile_ms(ordered, 0.99),
            "max_ms": round(1000 * ordered[-1], 2) if ordered else None,
            "pool_exhausted": self.exhausted,
        }


def percentile_ms(ordered: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return round(1000 * ordered[rank - 1], 2)


async def drive(operation: Operation, concurrency: int, seconds: float,
                max_requests: int | None = None) -> Samples:
    """Run ``concurrency`` closed-loop clients for ``seconds`` (or ``max_requests`` in all)."""
    samples = Samples()
    started = 0
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        nonlocal started
        while time.perf_counter() < deadline and (max_requests is None or started < max_requests):
            started += 1
            began = time.perf_counter()
            try:
                await operation(number)
            except PoolExhausted:
                samples.exhausted = True
                return
            except (FlowError, httpx.HTTPError) as error:
                samples.errors[f"{type(error).__name__}: {str(error)[:140]}"] += 1
                continue
            samples.latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    samples.elapsed = time.perf_counter() - began
    return samples
