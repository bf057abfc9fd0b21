"""Single-use values are taken exactly once, even by many threads at the same moment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import ConsumeOutcome, Store


def test_consume_once_takes_the_value_then_reports_replays(store: Store) -> None:
    key = store.keys.auth_code("abc")
    store.redis.set(key, b'{"a": 1}', ex=60)
    first = store.consume_once(key, 60)
    second = store.consume_once(key, 60)
    assert (first.outcome, first.value) == (ConsumeOutcome.CONSUMED, b'{"a": 1}')
    assert (second.outcome, second.value) == (ConsumeOutcome.REPLAYED, b'{"a": 1}')


def test_consume_once_of_a_missing_key_is_unknown(store: Store) -> None:
    result = store.consume_once(store.keys.auth_code("missing"), 60)
    assert result.outcome is ConsumeOutcome.UNKNOWN and result.value is None


def test_concurrent_consumers_get_exactly_one_value(store: Store) -> None:
    key = store.keys.refresh_token("race")
    store.redis.set(key, b"{}", ex=60)
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda _: store.consume_once(key, 60).outcome, range(64)))
    assert outcomes.count(ConsumeOutcome.CONSUMED) == 1
    assert outcomes.count(ConsumeOutcome.REPLAYED) == 63


def test_tombstone_expires(store: Store) -> None:
    key = store.keys.auth_code("ttl")
    store.redis.set(key, b"{}")
    store.consume_once(key, 7)
    assert 0 < store.redis.ttl(key) <= 7


# The store fixture is reused across examples on purpose: each example cleans its key.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=1, max_size=64).filter(lambda b: not b.startswith(b"!")))
def test_consume_once_returns_any_payload_unchanged(store: Store, payload: bytes) -> None:
    key = store.keys.auth_code("prop")
    store.redis.set(key, payload)
    assert store.consume_once(key, 5).value == payload
    store.redis.delete(key)
