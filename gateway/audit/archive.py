"""Archiving old entries of the log to files, keeping the rest verifiable.

An archive covers entries ``[start, stop)``; it starts with a header carrying what the
segment needs to be checked on its own: the hash of entry ``start - 1`` (the chain link)
and the compact range of ``[0, start)`` (the Merkle frontier), then the signed checkpoints
whose size falls in ``(start, stop]``, then the entries in the export's line format. A
forged header cannot pass: the entries rebuilt onto it must reproduce the signed roots.

In Redis the archived entries' records are removed, but the tree's stored hashes stay, so
inclusion and consistency proofs still work for every event, and the live check starts at
the archive boundary from those hashes (checked against every checkpoint it covers).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator

from gateway.audit.boundary import archived_size, frontier, previous_hash
from gateway.audit.checkpointer import Checkpointer, stored_notes
from gateway.audit.errors import AuditError
from gateway.audit.export import _entry_line, _record_of
from gateway.audit.log import AuditLog
from gateway.audit.merkle import TreeBuilder
from gateway.audit.note import NoteVerifier
from gateway.audit.verify import Problem, VerifyReport, _open_checkpoints, _Scan

ARCHIVE_FORMAT = "consent-gateway/audit-archive@1"
_BATCH = 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Archiver:
    def __init__(self, log: AuditLog, checkpointer: Checkpointer) -> None:
        self.log = log
        self.checkpointer = checkpointer

    def segment(self, before: int) -> tuple[int, int]:
        """``(start, stop)`` to archive: from the current boundary up to the largest signed
        checkpoint size not above ``before`` (an archive always ends on a signed root)."""
        start = archived_size(self.log)
        sealed = self.log.sealer.sealed_size()
        sizes = [size for size, _ in stored_notes(self.log) if start < size <= min(before, sealed)]
        if not sizes:
            raise AuditError(f"nothing to archive: no signed checkpoint between the archive boundary "
                             f"({start}) and {before}")
        return start, max(sizes)

    def lines(self, start: int, stop: int) -> Iterator[str]:
        yield json.dumps({"type": "header", "format": ARCHIVE_FORMAT, "start": start, "stop": stop,
                          "origin": self.log.origin,
                          "previous": _b64(previous_hash(self.log, start)),
                          "frontier": [_b64(h) for h in frontier(self.log, start)]}) + "\n"
        for size, note in stored_notes(self.log):
            if start < size <= stop:
                yield json.dumps({"type": "checkpoint", "note": note}, ensure_ascii=False) + "\n"
        for first in range(start, stop, _BATCH):
            indexes = list(range(first, min(stop, first + _BATCH)))
            for index, raw in zip(indexes, self.log.read_records(indexes), strict=True):
                if not isinstance(raw, bytes):
                    raise AuditError(f"entry {index} is missing: run `gateway audit verify`")
                yield json.dumps(_entry_line(index, raw), ensure_ascii=False) + "\n"

    def drop(self, start: int, stop: int) -> None:
        """Remove the archived records from Redis (after the file is safely written).

        With a cold tier the records are not removed: tiering already bounds Redis memory,
        and queries and people's histories keep reaching them in the cold tier."""
        if self.log.cold is not None:
            return
        key = self.log.shard_keys.audit_entries()
        for first in range(start, stop, _BATCH):
            self.log.store.redis.hdel(key, *[str(i) for i in range(first, min(stop, first + _BATCH))])
        self.log.store.redis.set(self.log.shard_keys.audit_archived(), stop)


def verify_archive(lines: Iterable[str], verifiers: list[NoteVerifier]) -> VerifyReport:
    """Check one archive file offline: chain, MAC-free entry checks, and every signed root."""
    try:
        items = [json.loads(line) for line in lines if line.strip()]
        header = items[0] if items else None
        if not isinstance(header, dict) or header.get("format") != ARCHIVE_FORMAT:
            raise AuditError(f"not a {ARCHIVE_FORMAT} file")
        start, stop = int(header["start"]), int(header["stop"])
        notes = [str(item["note"]) for item in items[1:] if item.get("type") == "checkpoint"]
        entries = [item for item in items[1:] if item.get("type") != "checkpoint"]
        builder = TreeBuilder(start, [base64.b64decode(h, validate=True) for h in header["frontier"]])
        previous = base64.b64decode(header["previous"], validate=True)
        origin = str(header["origin"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise AuditError(f"malformed archive ({type(error).__name__})") from None
    checkpoints, problem = _open_checkpoints(notes, verifiers, origin)
    scan = _Scan(checkpoints, None)
    scan.builder, scan.previous, scan.signed_to = builder, previous, start
    if problem is None and not any(start < size <= stop for size in checkpoints):
        problem = Problem(None, "no checkpoint in the archive signs its entries")
    if problem is not None:
        return scan.report(stop, problem)
    for expected, item in enumerate(entries, start):
        if int(item.get("index", -1)) != expected:
            return scan.report(stop, Problem(expected, "entry is missing or out of order"))
        try:
            record = _record_of(item)
        except (ValueError, KeyError, TypeError):
            return scan.report(stop, Problem(expected, "malformed entry line"))
        problem = scan.feed(expected, record)
        if problem:
            return scan.report(stop, problem)
    if start + len(entries) != stop:
        return scan.report(stop, Problem(start + len(entries), "entry is missing"))
    if scan.signed_to != stop:
        return scan.report(stop, Problem(scan.signed_to, "the last entries are not covered by a "
                                                         "checkpoint in the archive"))
    return scan.report(stop, None)
