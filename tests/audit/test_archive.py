"""Archiving old segments to files: each file verifies on its own, the live log still
verifies from the boundary, and proofs keep working for archived events."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit import AuditKeys, AuditLog, AuditService, Checkpointer, canonical_json, prove, verify_proof
from gateway.audit.archive import Archiver, verify_archive
from gateway.audit.boundary import archived_size
from gateway.audit.errors import AuditError
from gateway.audit.query import AuditFilter, AuditQuery
from gateway.audit.shards import shard_origin
from gateway.audit.verify import verify_log
from gateway.store import Store
from tests.audit.factories import ORIGIN, fill, person_event


@pytest.fixture
def signed_log(audit_log: AuditLog, make_checkpointer: Callable[..., Checkpointer]) -> Checkpointer:
    checkpointer = make_checkpointer(every_events=5, every_seconds=3600)
    for chunk in range(5):  # checkpoints at 5, 10, 15, 20, 25
        fill(audit_log, 5, start=chunk * 5)
        checkpointer.checkpoint()
    fill(audit_log, 3, start=25)  # an unsigned tail
    return checkpointer


def archive(checkpointer: Checkpointer, before: int, path: Path) -> tuple[int, int]:
    archiver = Archiver(checkpointer.log, checkpointer)
    start, stop = archiver.segment(before)
    path.write_text("".join(archiver.lines(start, stop)), encoding="utf-8")
    archiver.drop(start, stop)
    return start, stop


def test_segments_end_on_a_signed_checkpoint_and_verify_on_their_own(
    signed_log: Checkpointer, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    verifier = [audit_keys.signer.verifier]
    assert archive(signed_log, 13, tmp_path / "a.jsonl") == (0, 10)
    assert archive(signed_log, 99, tmp_path / "b.jsonl") == (10, 25)
    for name in ("a.jsonl", "b.jsonl"):
        with (tmp_path / name).open(encoding="utf-8") as lines:
            report = verify_archive(lines, verifier)
        assert report.ok, report.problem
    assert archived_size(signed_log.log) == 25


def test_the_live_log_verifies_from_the_boundary_and_queries_skip_archived_events(
    signed_log: Checkpointer, tmp_path: Path
) -> None:
    archive(signed_log, 15, tmp_path / "a.jsonl")
    report = verify_log(signed_log.log)
    assert report.ok, report.problem
    assert report.size == 28 and report.latest_checkpoint == 25
    page = AuditQuery(signed_log.log).page(AuditFilter(), cursor=0, limit=100)
    assert [item.index for item in page.items] == list(range(15, 28))


def test_proofs_still_verify_for_archived_events(signed_log: Checkpointer, audit_keys: AuditKeys,
                                                 tmp_path: Path) -> None:
    archive(signed_log, 15, tmp_path / "a.jsonl")
    latest = signed_log.latest()
    assert latest is not None
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    entry = next(item for item in lines if item.get("index") == 3)
    with pytest.raises(AuditError):
        prove(signed_log.log, 3, latest)  # the record itself is no longer in Redis…
    text = prove(signed_log.log, 3, latest, event=entry["event"].encode()).to_text()
    _, event = verify_proof(text, [audit_keys.signer.verifier], ORIGIN)  # …its proof still is
    assert event.model_dump(mode="json") == json.loads(entry["event"])
    forged = prove(signed_log.log, 3, latest, event=entry["event"].replace("req-3", "req-x").encode())
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do
        verify_proof(forged.to_text(), [audit_keys.signer.verifier], ORIGIN)


def test_a_tampered_archive_names_the_bad_index(signed_log: Checkpointer, audit_keys: AuditKeys,
                                                tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    archive(signed_log, 15, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        item = json.loads(line)
        if item.get("index") == 7:
            item["event"] = item["event"].replace("req-7", "req-x")
            lines[number] = json.dumps(item, ensure_ascii=False)
    report = verify_archive(lines, [audit_keys.signer.verifier])
    assert not report.ok and report.problem is not None
    assert report.problem.index in (6, 7, 10)


def test_a_forged_frontier_is_caught_by_the_signed_roots(signed_log: Checkpointer, audit_keys: AuditKeys,
                                                         tmp_path: Path) -> None:
    archive(signed_log, 10, tmp_path / "a.jsonl")
    path = tmp_path / "b.jsonl"
    archive(signed_log, 20, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    header["frontier"] = [base64.b64encode(bytes(32)).decode()] * len(header["frontier"])  # not the tree
    report = verify_archive([json.dumps(header), *lines[1:]], [audit_keys.signer.verifier])
    assert not report.ok


def test_tampering_with_the_tree_below_the_boundary_is_detected(
    signed_log: Checkpointer, store: Store, tmp_path: Path
) -> None:
    archive(signed_log, 15, tmp_path / "a.jsonl")
    tile = next(k for k in store.redis.scan_iter(match=f"{store.keys.prefix}*tile:0:*"))
    raw = store.redis.get(tile)
    assert isinstance(raw, bytes)
    store.redis.set(tile, bytes([raw[0] ^ 1]) + raw[1:])  # flip a bit of leaf 0's hash
    assert not verify_log(signed_log.log).ok


def test_nothing_to_archive_without_a_signed_checkpoint(
    audit_log: AuditLog, make_checkpointer: Callable[..., Checkpointer]
) -> None:
    fill(audit_log, 4)
    with pytest.raises(AuditError, match="nothing to archive"):
        Archiver(audit_log, make_checkpointer()).segment(4)


def test_one_shard_archives_on_its_own_and_everything_still_verifies(
        sharded: AuditService, audit_keys: AuditKeys, tmp_path: Path) -> None:
    recorded = [(event, sharded.record(event)) for event in map(person_event, range(60))]
    assert sharded.combined is not None and sharded.combined.checkpoint() is not None
    shard = sharded.shards[1]
    start, stop = archive(shard.checkpointer, shard.log.size(), tmp_path / "shard-1.jsonl")
    assert (start, stop) == (0, shard.log.size()) and stop > 0
    with (tmp_path / "shard-1.jsonl").open(encoding="utf-8") as lines:
        header = json.loads(next(lines))
    assert header["origin"] == shard_origin(ORIGIN, 1)
    with (tmp_path / "shard-1.jsonl").open(encoding="utf-8") as lines:
        assert verify_archive(lines, [audit_keys.signer.verifier]).ok
    report = sharded.verify()
    assert report.ok, report.problem
    page = sharded.query.page(AuditFilter(), limit=100)
    assert all(item.shard != 1 for item in page.items)  # archived: only in the file now
    event, appended = next((e, a) for e, a in recorded if a.shard == 1)
    latest = shard.checkpointer.latest()
    assert latest is not None
    text = prove(shard.log, appended.index, latest, canonical_json(event)).to_text()
    assert verify_proof(text, [audit_keys.signer.verifier], shard_origin(ORIGIN, 1))[1] == event
