"""GCRA buckets in Redis (gateway/store/limits.py): exact under concurrency, across processes."""

from __future__ import annotations

import multiprocessing
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.settings import RateLimit
from gateway.store import Store
from gateway.store.keys import KeySpace
from gateway.store.limits import Limit, RateLimits, subject_digest
from tests.live import redis_for

HOURLY = RateLimit(count=1, per_seconds=3600, burst=20)  # nothing refills during a test


def test_a_bucket_allows_its_burst_then_refuses_with_the_time_to_wait(store: Store) -> None:
    limit = Limit("t", RateLimit(count=60, per_seconds=60, burst=3))
    assert [store.limits.take([(limit, "a")]).retry_after for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = store.limits.take([(limit, "a")]).retry_after
    assert 0.9 <= wait <= 1.0  # one request a second
    assert store.limits.take([(limit, "b")]).retry_after == 0.0  # subjects are independent


def test_a_bucket_refills_at_its_rate(store: Store) -> None:
    limit = Limit("t", RateLimit(count=10, per_seconds=1, burst=1))
    assert store.limits.take([(limit, "a")]).retry_after == 0.0
    assert store.limits.take([(limit, "a")]).retry_after > 0
    time.sleep(0.12)
    assert store.limits.take([(limit, "a")]).retry_after == 0.0


def test_refused_requests_do_not_push_the_bucket_further(store: Store) -> None:
    limit = Limit("t", RateLimit(count=10, per_seconds=1, burst=1))
    store.limits.take([(limit, "a")])
    for _ in range(20):  # a flood of refused requests
        store.limits.take([(limit, "a")])
    time.sleep(0.12)
    assert store.limits.take([(limit, "a")]).retry_after == 0.0


def test_several_limits_take_one_round_trip_and_answer_the_longest_wait(store: Store) -> None:
    short = Limit("short", RateLimit(count=60, per_seconds=60, burst=1))
    long = Limit("long", RateLimit(count=1, per_seconds=60, burst=1))
    assert store.limits.take([(short, "a"), (long, "a")]).retry_after == 0.0
    assert store.limits.take([(short, "a"), (long, "a")]).retry_after > 50  # the long one decides


def test_a_bucket_key_names_no_subject_and_expires_when_full_again(store: Store) -> None:
    limit = Limit("t", RateLimit(count=60, per_seconds=60, burst=5))
    store.limits.take([(limit, "203.0.113.7")])
    key = store.keys.rate_limit("t", subject_digest("203.0.113.7"))
    assert b"203.0.113.7" not in key.encode()
    assert 0 < int(store.redis.pttl(key)) <= 1000  # one interval: then the bucket is full


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(burst=st.integers(1, 30), attempts=st.integers(0, 60))
def test_at_one_instant_exactly_the_burst_is_allowed(store: Store, burst: int, attempts: int) -> None:
    limit = Limit("h", RateLimit(count=1, per_seconds=3600, burst=burst))
    subject = secrets.token_hex(8)
    allowed = sum(store.limits.take([(limit, subject)]).retry_after == 0.0 for _ in range(attempts))
    assert allowed == min(burst, attempts)


def test_threads_racing_on_one_bucket_get_exactly_the_burst(store: Store) -> None:
    limit = Limit("race", HOURLY)
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: store.limits.take([(limit, "x")]).retry_after, range(100)))
    assert sum(wait == 0.0 for wait in waits) == HOURLY.burst


def _hammer(url: str, prefix: str, attempts: int, results: multiprocessing.Queue[int]) -> None:
    client = redis_for(url)
    limits = RateLimits(client, KeySpace(prefix))
    allowed = sum(limits.take([(Limit("race", HOURLY), "x")]).retry_after == 0.0 for _ in range(attempts))
    client.close()
    results.put(allowed)


def test_worker_processes_share_one_bucket(store: Store) -> None:
    """Four processes (as four gateway workers would) spend from one bucket: 20 in all."""
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = context.Queue()
    workers = [context.Process(target=_hammer, args=(store.url, store.keys.prefix, 15, results))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert sum(counts) == HOURLY.burst


def test_the_request_that_empties_a_bucket_says_for_how_long(store: Store) -> None:
    limit = Limit("t", RateLimit(count=60, per_seconds=60, burst=2))
    first, second = (store.limits.take([(limit, "a")]) for _ in range(2))
    assert first.retry_after == 0.0 and first.blocked_for(0) == 0.0
    assert second.retry_after == 0.0 and 0.9 <= second.blocked_for(0) <= 1.0


def test_peeking_spends_nothing(store: Store) -> None:
    limit = Limit("t", RateLimit(count=60, per_seconds=60, burst=1))
    assert store.limits.peek([(limit, "a")]).retry_after == 0.0
    assert store.limits.peek([(limit, "a")]).retry_after == 0.0
    store.limits.take([(limit, "a")])
    assert 0.9 <= store.limits.peek([(limit, "a")]).retry_after <= 1.0
