"""The combined checkpoint: one signed note over every shard; shard proofs check against it."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import AuditService, NoteVerifier, verify_proof
from gateway.audit.checkpoint import Checkpoint, verify_checkpoint
from gateway.audit.combined import (
    COMBINED_FORMAT,
    CombinedCheckpoint,
    combine,
    verify_combined,
    verify_in_combined,
)
from gateway.audit.errors import CheckpointError
from gateway.audit.merkle import EMPTY_ROOT
from gateway.audit.note import sign_note
from gateway.audit.shards import shard_origin
from tests.audit.conftest import SHARDS
from tests.audit.factories import ORIGIN, person_event


def verifiers(service: AuditService) -> list[NoteVerifier]:
    return [NoteVerifier.from_string(service.verifier_key)]


def test_the_note_text_lists_each_shards_origin_size_and_root() -> None:
    combined = combine(ORIGIN, [Checkpoint(shard_origin(ORIGIN, i), 10 * i, bytes([i]) * 32)
                                for i in range(3)])
    lines = combined.text().split("\n")
    assert lines[:3] == [COMBINED_FORMAT, ORIGIN, f"{ORIGIN} 0 {'A' * 43}="]
    assert lines[4].startswith(f"{ORIGIN}/2 20 ")
    assert CombinedCheckpoint.parse(combined.text()) == combined
    assert combined.total_size == 30


def test_a_combined_note_is_no_checkpoint_of_any_log(sharded: AuditService) -> None:
    signer = sharded.keys.signer
    note = sign_note(combine(ORIGIN, [Checkpoint(ORIGIN, 0, EMPTY_ROOT)] * 2).text(), [signer])
    with pytest.raises(CheckpointError):
        verify_checkpoint(note, [signer.verifier])


@pytest.mark.parametrize("origins", [[ORIGIN, f"{ORIGIN}/2"], [f"{ORIGIN}/1", ORIGIN],
                                     ["other/audit", ORIGIN]])
def test_a_combined_note_must_list_the_shards_in_order_under_their_origins(sharded: AuditService,
                                                                          origins: list[str]) -> None:
    signer = sharded.keys.signer
    note = sign_note(combine(ORIGIN, [Checkpoint(o, 0, EMPTY_ROOT) for o in origins]).text(), [signer])
    with pytest.raises(CheckpointError):
        verify_combined(note, [signer.verifier], ORIGIN)


def test_one_round_signs_every_shard_and_one_note_over_all(sharded: AuditService) -> None:
    for n in range(50):
        sharded.record(person_event(n))
    assert sharded.combined is not None
    done = sharded.combined.checkpoint()
    assert done is not None and done.combined is not None
    listed = done.combined.combined.shards
    assert [c.size for c in listed] == [shard.log.size() for shard in sharded.shards]
    assert sum(c.size for c in listed) == 50
    for shard, checkpoint in zip(sharded.shards, listed, strict=True):
        latest = shard.checkpointer.latest()
        assert latest is not None and latest.checkpoint == checkpoint
        assert checkpoint.root == shard.log.root(checkpoint.size)
    opened = verify_combined(done.combined.note, verifiers(sharded), ORIGIN, SHARDS)
    assert opened == done.combined.combined
    assert sharded.combined.checkpoint() == type(done)((None,) * SHARDS, None)  # nothing grew


def test_record_signs_a_round_when_a_shard_reaches_its_interval(
        make_sharded: Callable[..., AuditService]) -> None:
    service = make_sharded(every_events=4)
    for n in range(40):
        service.record(person_event(n))
    assert service.combined is not None
    history = service.combined.history()
    assert history, "no combined checkpoint was signed"
    totals = [signed.combined.total_size for signed in history]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    for earlier, later in itertools.pairwise(history):
        pairs = zip(earlier.combined.shards, later.combined.shards, strict=True)
        assert all(before.size <= after.size for before, after in pairs)


def test_each_shards_proofs_verify_against_the_combined_checkpoint(sharded: AuditService) -> None:
    events = [person_event(n) for n in range(45)]
    where = [(event, sharded.record(event)) for event in events]
    assert sharded.combined is not None
    for event, appended in where[::4]:
        text = sharded.prove(appended.index, appended.shard).to_text()
        checkpoint, proven = verify_proof(text, verifiers(sharded), shard_origin(ORIGIN, appended.shard))
        assert proven == event
        latest = sharded.combined.latest()
        assert latest is not None
        assert verify_in_combined(checkpoint, latest.note, verifiers(sharded), ORIGIN) == latest.combined


def test_a_proof_of_another_shard_state_is_not_in_the_combined_checkpoint(sharded: AuditService) -> None:
    for n in range(20):
        sharded.record(person_event(n))
    appended = sharded.record(person_event(21))
    text = sharded.prove(appended.index, appended.shard).to_text()
    checkpoint, _ = verify_proof(text, verifiers(sharded), shard_origin(ORIGIN, appended.shard))
    latest = sharded.combined.latest() if sharded.combined else None
    assert latest is not None
    forged = Checkpoint(checkpoint.origin, checkpoint.size, bytes(32))
    with pytest.raises(CheckpointError):
        verify_in_combined(forged, latest.note, verifiers(sharded), ORIGIN)
    other = next(i for i in range(SHARDS) if i != appended.shard)
    moved = Checkpoint(shard_origin(ORIGIN, other), checkpoint.size, checkpoint.root)
    with pytest.raises(CheckpointError):
        verify_in_combined(moved, latest.note, verifiers(sharded), ORIGIN)


def test_no_round_while_another_process_holds_shard_0s_lock(sharded: AuditService) -> None:
    for n in range(10):
        sharded.record(person_event(n))
    assert sharded.combined is not None
    lock = sharded.log.shard_keys.audit_checkpoint_lock()
    sharded.log.store.redis.set(lock, "another-process", px=5_000)
    assert sharded.combined.checkpoint() is None
    assert all(shard.checkpointer.latest() is None for shard in sharded.shards)
    sharded.log.store.redis.delete(lock)
    done = sharded.combined.checkpoint()
    assert done is not None and done.combined is not None and all(done.shards)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=2**63), st.binary(min_size=32, max_size=32)),
                min_size=1, max_size=8))
def test_the_note_text_round_trips_for_any_sizes_and_roots(states: list[tuple[int, bytes]]) -> None:
    combined = combine(ORIGIN, [Checkpoint(shard_origin(ORIGIN, i), size, root)
                                for i, (size, root) in enumerate(states)])
    assert CombinedCheckpoint.parse(combined.text()) == combined
    assert combined.total_size == sum(size for size, _ in states)
    assert all(combined.covers(shard) for shard in combined.shards)
