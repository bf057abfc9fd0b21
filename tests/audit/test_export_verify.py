"""The verification export: streamed, and checkable offline with only the published key."""

from __future__ import annotations

import base64
import json
import types
from collections.abc import Callable

import pytest

from gateway.audit import (
    AuditLog,
    AuditService,
    Checkpointer,
    NoteVerifier,
    export_log,
    leaf_hash,
    verify_export,
)
from gateway.audit.checkpoint import Checkpoint
from gateway.audit.shards import shard_origin
from gateway.audit.verify import verify_shard_exports
from tests.audit.conftest import SHARDS
from tests.audit.factories import ORIGIN, fill, person_event


@pytest.fixture
def checkpointer(audit_log: AuditLog, make_checkpointer: Callable[..., Checkpointer]) -> Checkpointer:
    checkpointer = make_checkpointer(every_events=10)
    for start in range(0, 35, 5):
        fill(audit_log, 5, start=start)
        checkpointer.after_append(start + 4)
    return checkpointer


def exported(log: AuditLog) -> list[str]:
    return list(export_log(log))


def keys(checkpointer: Checkpointer) -> list[NoteVerifier]:
    return [NoteVerifier.from_string(checkpointer.signer.verifier.to_string())]


def edit(lines: list[str], index: int, change: Callable[[dict[str, object]], None]) -> list[str]:
    """Apply ``change`` to the export line of entry ``index``."""
    out = []
    for line in lines:
        item = json.loads(line)
        if item.get("type") == "entry" and item["index"] == index:
            change(item)
            line = json.dumps(item, ensure_ascii=False) + "\n"
        out.append(line)
    return out


def test_the_export_is_a_stream_of_header_checkpoints_then_entries(audit_log: AuditLog,
                                                                   checkpointer: Checkpointer) -> None:
    stream = export_log(audit_log)
    assert isinstance(stream, types.GeneratorType)
    kinds = [json.loads(line)["type"] for line in stream]
    assert kinds == ["header"] + ["checkpoint"] * 3 + ["entry"] * 35


def test_an_untouched_export_verifies_offline_with_the_published_key(audit_log: AuditLog,
                                                                     checkpointer: Checkpointer) -> None:
    report = verify_export(exported(audit_log), keys(checkpointer), ORIGIN)
    assert report.ok, report.problem
    assert (report.size, report.checkpoints_checked, report.latest_checkpoint) == (35, 3, 30)


def test_with_the_mac_key_the_export_check_is_as_strict_as_the_live_one(audit_log: AuditLog,
                                                                          checkpointer: Checkpointer) -> None:
    lines = edit(exported(audit_log), 32, lambda item: item.update(tag="AAAAAAAAAAAAAAAAAAAAAA=="))
    assert verify_export(lines, keys(checkpointer), ORIGIN).ok  # a regulator cannot check MACs
    report = verify_export(lines, keys(checkpointer), ORIGIN, mac_key=audit_log.keys.mac_key)
    assert report.problem is not None and report.problem.index == 32


def test_an_altered_event_in_an_export_is_caught_at_that_entry(audit_log: AuditLog,
                                                               checkpointer: Checkpointer) -> None:
    def alter(item: dict[str, object]) -> None:
        item["event"] = str(item["event"]).replace('"outcome":"success"', '"outcome":"denied"')

    report = verify_export(edit(exported(audit_log), 12, alter), keys(checkpointer), ORIGIN)
    assert report.problem is not None and report.problem.index == 12


def test_a_removed_entry_in_an_export_is_caught(audit_log: AuditLog, checkpointer: Checkpointer) -> None:
    lines = [line for line in exported(audit_log) if '"index": 8,' not in line]
    report = verify_export(lines, keys(checkpointer), ORIGIN)
    assert report.problem is not None and report.problem.index == 8


def test_an_export_cut_short_is_caught(audit_log: AuditLog, checkpointer: Checkpointer) -> None:
    report = verify_export(exported(audit_log)[:-10], keys(checkpointer), ORIGIN)
    assert report.problem is not None and report.problem.index == 25


def test_an_export_checked_with_the_wrong_key_fails(audit_log: AuditLog, checkpointer: Checkpointer) -> None:
    stranger = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    report = verify_export(exported(audit_log), [NoteVerifier.from_string(stranger)], ORIGIN)
    assert report.problem is not None and "no trusted key" in report.problem.reason


def test_an_export_without_checkpoints_proves_nothing(audit_log: AuditLog,
                                                      checkpointer: Checkpointer) -> None:
    lines = [line for line in exported(audit_log) if '"checkpoint"' not in line]
    report = verify_export(lines, keys(checkpointer), ORIGIN)
    assert report.problem is not None and "no checkpoint" in report.problem.reason


def test_a_checkpoint_for_a_rewritten_history_is_caught(audit_log: AuditLog,
                                                       checkpointer: Checkpointer) -> None:
    lines = exported(audit_log)
    # Rewrite entry 3 AND relink entry 4 to it: the chain holds, the signed root does not.
    def alter(item: dict[str, object]) -> None:
        item["event"] = str(item["event"]).replace('"outcome":"success"', '"outcome":"error"')

    lines = edit(lines, 3, alter)
    new_leaf = leaf_hash(str(json.loads(lines[4 + 3])["event"]).encode())  # header + 3 checkpoints
    lines = edit(lines, 4, lambda item: item.update(prev=base64.b64encode(new_leaf).decode()))
    report = verify_export(lines, keys(checkpointer), ORIGIN)
    assert report.problem is not None and report.problem.index == 0
    assert "differ from what the checkpoint at size 10 signed" in report.problem.reason


def test_a_malformed_line_in_an_export_is_reported_not_raised(audit_log: AuditLog,
                                                              checkpointer: Checkpointer) -> None:
    lines = edit(exported(audit_log), 6, lambda item: item.pop("nonce"))
    report = verify_export(lines, keys(checkpointer), ORIGIN)
    assert report.problem is not None and report.problem.index == 6


def verifiers(service: AuditService) -> list[NoteVerifier]:
    return [NoteVerifier.from_string(service.verifier_key)]


def shard_exports(service: AuditService) -> list[list[str]]:
    for part in range(2):  # two rounds of checkpoints, then an unsigned tail
        for n in range(part * 30, part * 30 + 30):
            service.record(person_event(n))
        assert service.combined is not None and service.combined.checkpoint() is not None
    service.record(person_event(99))
    return [list(export_log(shard.log)) for shard in service.shards]


def test_every_shards_export_verifies_offline_with_the_combined_checkpoints(sharded: AuditService) -> None:
    files = shard_exports(sharded)
    assert sum(json.loads(line)["type"] == "combined" for line in files[0]) == 2
    assert not any(json.loads(line)["type"] == "combined" for line in files[1])
    report = verify_shard_exports(lambda shard: files[shard], SHARDS, verifiers(sharded), ORIGIN)
    assert report.ok, report.problem
    assert report.size == 61 and report.unsigned_tail == 1 and len(report.shards) == SHARDS
    for shard, lines in enumerate(files):  # and each on its own, under its origin
        assert verify_export(lines, verifiers(sharded), shard_origin(ORIGIN, shard)).ok


def test_a_shard_export_cut_back_to_an_earlier_checkpoint_is_caught_by_the_combined_ones(
        sharded: AuditService) -> None:
    files = shard_exports(sharded)
    items = [json.loads(line) for line in files[1]]
    first = next(item for item in items if item["type"] == "checkpoint")
    kept = Checkpoint.parse(first["note"].partition("\n\n")[0] + "\n").size
    cut = [{**items[0], "size": kept}, first,
           *(item for item in items if item["type"] == "entry" and item["index"] < kept)]
    files[1] = [json.dumps(item) + "\n" for item in cut]
    assert verify_export(files[1], verifiers(sharded), shard_origin(ORIGIN, 1)).ok  # alone: plausible
    report = verify_shard_exports(lambda shard: files[shard], SHARDS, verifiers(sharded), ORIGIN)
    assert report.problem is not None and report.problem.shard == 1 and report.problem.index == kept


def test_shard_exports_without_the_combined_checkpoints_are_refused(sharded: AuditService) -> None:
    files = shard_exports(sharded)
    files[0] = [line for line in files[0] if json.loads(line)["type"] != "combined"]
    report = verify_shard_exports(lambda shard: files[shard], SHARDS, verifiers(sharded), ORIGIN)
    assert report.problem is not None and "no combined checkpoint" in report.problem.reason
