"""Exports, all streamed line by line (generators; nothing is built in memory).

Two kinds:

- **Query exports** for staff and for a person's access request (PIPL art. 45, GDPR art. 15):
  the matching events as JSON Lines or CSV, one row per event with its log index.
- **The verification export** (format ``consent-gateway/audit-export@1``, JSON Lines) for
  offline checking by a regulator with ``gateway audit verify --export``: a header line, then
  every stored checkpoint, then every entry with its envelope::

      {"type": "header", "format": "consent-gateway/audit-export@1", "size": 1234}
      {"type": "checkpoint", "note": "<signed note text>"}
      {"type": "entry", "index": 0, "prev": "<b64>", "nonce": "<b64>", "tag": "<b64>",
       "event": "<canonical event JSON, as a string>"}

  The event is kept as the exact canonical string (not re-nested JSON) so its bytes, and
  hence its leaf hash, survive any JSON tool. A record that cannot be split is exported whole
  as ``"record_b64"``; a missing entry is simply absent (the verifier sees the gap).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.audit.checkpointer import stored_notes
from gateway.audit.combined import stored_combined_notes
from gateway.audit.errors import AuditError
from gateway.audit.records import StoredEntry
from gateway.audit.shard_query import ShardedQuery

if TYPE_CHECKING:
    from gateway.audit.log import AuditLog
    from gateway.audit.query import AuditFilter, AuditQuery, LoggedEvent

EXPORT_FORMAT = "consent-gateway/audit-export@1"
CSV_COLUMNS = ("index", "time", "action", "actor_type", "actor_id", "person", "shop", "fields",
               "purpose", "policy_version", "outcome", "request_id")
_BATCH = 1000


def _sharded(query: AuditQuery | ShardedQuery) -> bool:
    """Whether rows must name their shard: an index alone names no event among several logs."""
    return isinstance(query, ShardedQuery) and query.shards > 1


def _row(logged: LoggedEvent, sharded: bool) -> dict[str, Any]:
    where = {"shard": logged.shard, "index": logged.index} if sharded else {"index": logged.index}
    return {**where, **logged.event.model_dump(mode="json")}


def export_jsonl(query: AuditQuery | ShardedQuery, flt: AuditFilter, cursor: int = 0) -> Iterator[str]:
    sharded = _sharded(query)
    for logged in query.events(flt, cursor):
        yield json.dumps(_row(logged, sharded), ensure_ascii=False, sort_keys=True) + "\n"


def export_csv(query: AuditQuery | ShardedQuery, flt: AuditFilter, cursor: int = 0) -> Iterator[str]:
    """CSV (RFC 4180). Field names are joined with spaces; every id starts with a letter or
    digit (events.py), so no cell can be read as a spreadsheet formula. With several shards a
    ``shard`` column comes first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(values: Iterable[object]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    sharded = _sharded(query)
    columns = ("shard", *CSV_COLUMNS) if sharded else CSV_COLUMNS
    yield line(columns)
    for logged in query.events(flt, cursor):
        row = _row(logged, sharded)
        row["fields"] = " ".join(row["fields"])
        yield line("" if row[column] is None else row[column] for column in columns)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _entry_line(index: int, raw: bytes) -> dict[str, Any]:
    try:
        entry = StoredEntry.parse(index, raw)
        event = entry.event.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return {"type": "entry", "index": index, "record_b64": _b64(raw)}
    return {"type": "entry", "index": index, "prev": _b64(entry.prev), "nonce": _b64(entry.nonce),
            "tag": _b64(entry.tag), "event": event}


def export_log(log: AuditLog) -> Iterator[str]:
    """The verification export of the whole log (one shard's), as stored (tampering included).
    Shard 0's export also carries the combined checkpoints over every shard (none with K = 1)."""
    notes = stored_notes(log)  # read before the size: every checkpoint then fits in the export
    combined = stored_combined_notes(log) if log.shard == 0 else []
    size = log.size()
    yield json.dumps({"type": "header", "format": EXPORT_FORMAT, "size": size}) + "\n"
    for _, note in notes:
        yield json.dumps({"type": "checkpoint", "note": note}, ensure_ascii=False) + "\n"
    for _, note in combined:
        yield json.dumps({"type": "combined", "note": note}, ensure_ascii=False) + "\n"
    for start in range(0, size, _BATCH):
        indexes = list(range(start, min(size, start + _BATCH)))
        for index, raw in zip(indexes, log.read_records(indexes), strict=True):
            if isinstance(raw, bytes):
                yield json.dumps(_entry_line(index, raw), ensure_ascii=False) + "\n"


@dataclass(frozen=True, slots=True)
class ExportedEntry:
    index: int
    record: bytes


class ExportReader:
    """Reads a verification export: header and checkpoints first, then entries as a stream."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        header = self._next()
        if header is None or header.get("type") != "header" or header.get("format") != EXPORT_FORMAT:
            raise AuditError(f"not a {EXPORT_FORMAT} file")
        self.size = int(header["size"])
        self.notes: list[str] = []
        self.combined: list[str] = []  # shard 0's export: the notes signed over every shard
        self._pending: dict[str, Any] | None = None
        while (item := self._next()) is not None and item.get("type") in ("checkpoint", "combined"):
            (self.notes if item["type"] == "checkpoint" else self.combined).append(str(item["note"]))
        self._pending = item

    def _next(self) -> dict[str, Any] | None:
        for line in self._lines:
            if line.strip():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    raise AuditError("export line is not JSON") from None
                if not isinstance(item, dict):
                    raise AuditError("export line is not a JSON object")
                return item
        return None

    def entries(self) -> Iterator[ExportedEntry]:
        item = self._pending
        while item is not None:
            if item.get("type") != "entry":
                raise AuditError("entries must come after the header and the checkpoints")
            try:
                entry = ExportedEntry(int(item["index"]), _record_of(item))
            except (KeyError, ValueError, TypeError):
                raise AuditError(f"malformed entry line (index {item.get('index')!r})") from None
            yield entry
            item = self._next()


def _record_of(item: dict[str, Any]) -> bytes:
    if "record_b64" in item:
        return base64.b64decode(item["record_b64"])
    parts = (base64.b64decode(item["prev"]), base64.b64decode(item["nonce"]), base64.b64decode(item["tag"]))
    return b"".join(parts) + str(item["event"]).encode("utf-8")
