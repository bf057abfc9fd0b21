"""Shards: a person's events stay in one shard, and every shard lives in one Redis slot."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from gateway.audit import AuditService
from gateway.audit.events import is_identifier
from gateway.audit.shards import shard_of_event, shard_of_person, shard_origin
from gateway.store import KeySpace, Store
from tests.audit.conftest import SHARDS
from tests.audit.factories import ORIGIN, make_event, person_event

person_ids = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_."), min_size=1,
                     max_size=40).map(lambda tail: f"p{tail}").filter(is_identifier)


@settings(max_examples=200, deadline=None)
@given(person=person_ids, shards=st.integers(min_value=1, max_value=64))
def test_a_person_always_maps_to_the_same_shard_in_range(person: str, shards: int) -> None:
    shard = shard_of_person(person, shards)
    assert 0 <= shard < shards
    assert shard_of_person(person, shards) == shard
    assert shard_of_event(make_event(person=person), shards) == shard
    assert shard_of_person(person, 1) == 0


def test_events_without_a_person_go_to_shard_0() -> None:
    assert shard_of_event(make_event(person=None, action="policy_loaded"), SHARDS) == 0


def test_many_persons_spread_over_every_shard_each_person_on_one(sharded: AuditService) -> None:
    appended = [(event.person, sharded.record(event)) for event in map(person_event, range(120))]
    shards_of: dict[str | None, set[int]] = {}
    for person, result in appended:
        shards_of.setdefault(person, set()).add(result.shard)
    assert all(len(shards) == 1 for shards in shards_of.values())
    assert {result.shard for _, result in appended} == set(range(SHARDS))
    assert sum(shard.log.size() for shard in sharded.shards) == 120
    for person, (shard,) in shards_of.items():
        assert person is not None and sharded.shard_of_person(person) == shard
        history = sharded.query.latest_for_person(person, 100)
        assert len(history) == 3 and {logged.shard for logged in history} == {shard}


def test_shard_0_keys_are_the_unsharded_keys_byte_for_byte() -> None:
    keys = KeySpace("gw:")
    shard = keys.audit_shard(0)
    assert shard.audit_size() == keys.audit_size() == "gw:{audit}:size"
    assert shard.audit_index("person", "p-1") == keys.audit_index("person", "p-1")
    assert keys.audit_index("person", "p-1") == "gw:{audit}:idx:person:p-1"
    assert shard.audit_tile(0, 2) == keys.audit_tile(0, 2) == "gw:{audit}:tile:0:2"
    assert keys.audit_shard(2).audit_entries() == "gw:{audit:2}:entries"
    assert shard_origin(ORIGIN, 0) == ORIGIN and shard_origin(ORIGIN, 2) == f"{ORIGIN}/2"


def test_every_key_a_shard_writes_lies_in_that_shards_one_slot(store: Store, sharded: AuditService) -> None:
    for n in range(60):
        sharded.record(person_event(n), event_id=f"id-{n}")
    assert sharded.combined is not None and sharded.combined.checkpoint() is not None
    slots: dict[int, set[int]] = {}
    for key in store.redis.scan_iter(match=f"{store.keys.prefix}*"):
        name = key.decode().removeprefix(store.keys.prefix)
        tag = name[1:name.index("}")]
        shard = 0 if tag == "audit" else int(tag.removeprefix("audit:"))
        slots.setdefault(shard, set()).add(key_slot(key))
    assert sorted(slots) == list(range(SHARDS))
    assert all(len(found) == 1 for found in slots.values())
    assert len({found.pop() for found in slots.values()}) == SHARDS  # three different slots
