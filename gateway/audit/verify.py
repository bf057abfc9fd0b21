"""Verifying the whole log — live in Redis, or an offline export — and naming the first bad index.

One pass over the entries, in order, recomputes everything from the events alone: each
event's canonical form and MAC (when the key is at hand), the ``prev`` link to the entry
before, the Merkle tree (RFC 9162 §2.1.1) and its root at every checkpoint's size, and each
checkpoint's signature (c2sp.org/signed-note). A live check also compares the stored subtree
hashes, the head and the sealed size with what the entries say. The first problem stops the
pass, reported with the lowest index that can be wrong and why.

What cannot be detected is said plainly in docs/audit.md: without a checkpoint held outside
Redis, someone who can write to Redis can still cut off the tail signed by no checkpoint.

A log checked with other settings than it was written with (another issuer, hence another
origin; another keys directory, hence another audit key) fails every signature and every
MAC. That is told apart from tampering: when *no* checkpoint carries a signature by a trusted
key and all of them name one other origin, or one other key under our origin (or, without
checkpoints, no sampled entry's MAC verifies), the problem carries a :class:`Mismatch`
naming what differs, the value found in the log and the one configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, cast

from gateway.audit.boundary import archived_size
from gateway.audit.checkpoint import Checkpoint, verify_checkpoint
from gateway.audit.checkpointer import stored_notes
from gateway.audit.combined import CombinedCheckpoint, shards_signed, stored_combined_notes, verify_combined
from gateway.audit.errors import AuditError, CheckpointError
from gateway.audit.export import ExportReader
from gateway.audit.merkle import EMPTY_ROOT, Coord, TreeBuilder, root_at
from gateway.audit.note import _split as split_note
from gateway.audit.records import ZERO_HASH, check_entry, read_entry
from gateway.audit.sealer import link_problem
from gateway.audit.shards import shard_origin

if TYPE_CHECKING:
    from gateway.audit.log import AuditLog
    from gateway.audit.note import NoteVerifier

BATCH = 2000


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The log was written under other settings: ``found`` in the log, ``configured`` here."""

    setting: Literal["origin", "key", "mac_key", "shards"]
    found: str
    configured: str


@dataclass(frozen=True, slots=True)
class Problem:
    index: int | None  # None: not tied to one entry (a checkpoint's signature, say)
    reason: str
    mismatch: Mismatch | None = None  # set when it is a settings mismatch, not tampering
    shard: int | None = None  # with several shards: the shard ``index`` counts in


@dataclass(frozen=True, slots=True)
class VerifyReport:
    size: int
    entries_checked: int
    checkpoints_checked: int
    latest_checkpoint: int  # tree size of the newest verified checkpoint (0: none)
    problem: Problem | None
    shards: tuple[VerifyReport, ...] = ()  # with several shards: each one's report (sums above)

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def mismatch(self) -> Mismatch | None:
        return self.problem.mismatch if self.problem is not None else None

    @property
    def unsigned_tail(self) -> int:
        """Entries after the newest checkpoint: checked, but not yet signed."""
        return max(0, self.size - self.latest_checkpoint)


def settings_mismatch(notes: list[str], verifiers: list[NoteVerifier], origin: str) -> Mismatch | None:
    """Whether checkpoints that do not verify were written under other settings: none carries a
    signature line of a trusted key, and all name one other origin, or are signed by one other
    key under the expected origin. A note signed by a trusted key (whose signature then failed),
    a malformed note or a mix of origins and keys is no settings question: ``None``."""
    trusted = {(v.name, v.key_id) for v in verifiers}
    origins: set[str] = set()
    signers: set[str] = set()
    for note in notes:
        try:
            text, signatures = split_note(note)
            found = Checkpoint.parse(text).origin
        except CheckpointError:
            return None
        if any((name, blob[:4]) in trusted for name, blob in signatures):
            return None
        origins.add(found)
        signers.update(f"{name}+{blob[:4].hex()}" for name, blob in signatures)
    if len(origins) != 1:
        return None
    found = origins.pop()
    if found != origin:
        return Mismatch("origin", found, origin)
    if len(signers) == 1:
        return Mismatch("key", signers.pop(), ", ".join(f"{v.name}+{v.key_id.hex()}" for v in verifiers))
    return None


def mismatch_reason(mismatch: Mismatch) -> str:
    if mismatch.setting == "origin":
        return (f"no trusted key signed any checkpoint, a settings mismatch, not tampering: the "
                f"checkpoints are for origin {mismatch.found!r}, the configured origin is "
                f"{mismatch.configured!r}")
    if mismatch.setting == "key":
        return (f"no trusted key signed any checkpoint, a settings mismatch, not tampering: the "
                f"checkpoints are signed by key {mismatch.found}, the configured key is "
                f"{mismatch.configured}")
    if mismatch.setting == "shards":
        return (f"settings mismatch, not tampering: the log's combined checkpoints list {mismatch.found} "
                f"shards, {mismatch.configured} configured")
    return (f"settings mismatch, not tampering: no entry's MAC verifies with the configured audit "
            f"key {mismatch.configured}; the log was written with another key")


def _open_checkpoints(
    notes: Iterable[str], verifiers: list[NoteVerifier], origin: str
) -> tuple[dict[int, Checkpoint], Problem | None]:
    if not verifiers:
        return {}, Problem(None, "no trusted checkpoint key given")
    notes = list(notes)
    by_size: dict[int, Checkpoint] = {}
    for number, note in enumerate(notes):
        try:
            checkpoint = verify_checkpoint(note, verifiers, origin)
        except CheckpointError as error:
            mismatch = None if by_size else settings_mismatch(notes, verifiers, origin)
            if mismatch is not None:
                return by_size, Problem(None, mismatch_reason(mismatch), mismatch)
            return by_size, Problem(None, f"checkpoint #{number}: {error}")
        seen = by_size.setdefault(checkpoint.size, checkpoint)
        if seen.root != checkpoint.root:
            return by_size, Problem(None, f"two signed checkpoints at size {checkpoint.size} disagree")
    if 0 in by_size and by_size[0].root != EMPTY_ROOT:
        return by_size, Problem(None, "the checkpoint at size 0 has a root other than SHA-256('')")
    return by_size, None


class _Scan:
    """The in-order walk shared by the live and the offline check."""

    def __init__(self, checkpoints: dict[int, Checkpoint], mac_key: bytes | None) -> None:
        self.checkpoints = checkpoints
        self.mac_key = mac_key
        self.builder = TreeBuilder()
        self.previous = ZERO_HASH
        self.nonces: set[int] = set()
        self.signed_to = 0  # size of the last checkpoint whose root matched
        self.nodes: list[tuple[Coord, bytes]] = []  # finished subtrees since the last drain

    def feed(self, index: int, raw: bytes | None, stored_leaf: bytes | None = None) -> Problem | None:
        entry = read_entry(index, raw)
        if isinstance(entry, str):
            return Problem(index, entry)
        problem = check_entry(entry, self.mac_key)
        if problem:
            return Problem(index, problem)
        leaf = entry.leaf_hash()
        if stored_leaf is not None and stored_leaf != leaf:
            return Problem(index, "entry differs from the leaf hash sealed into the tree "
                                  "(altered, or moved here from elsewhere)")
        nonce = int.from_bytes(entry.nonce[:8], "big")
        if nonce in self.nonces:
            return Problem(index, "entry repeats an earlier entry (same MAC nonce): a copy")
        self.nonces.add(nonce)
        problem = link_problem(entry, self.previous)
        if problem:
            # With the MAC checked, entry index-1 is genuine, so the fault is here; without it,
            # either side of the link may have been altered.
            return Problem(index if self.mac_key else max(0, index - 1), problem)
        self.previous = leaf
        self.nodes.extend(self.builder.push(leaf))
        size = index + 1
        if size in self.checkpoints:
            if self.builder.root() != self.checkpoints[size].root:
                return Problem(self.signed_to, f"entries [{self.signed_to}, {size}) differ from what "
                                               f"the checkpoint at size {size} signed")
            self.signed_to = size
        return None

    def finish(self, size: int) -> Problem | None:
        beyond = [s for s in self.checkpoints if s > size]
        if beyond:
            return Problem(size, f"a checkpoint was signed at size {max(beyond)} but the log holds "
                                 f"{size} entries: entries from {size} on were removed")
        return None

    def report(self, size: int, problem: Problem | None) -> VerifyReport:
        latest = max((s for s in self.checkpoints if s <= self.signed_to), default=0)
        return VerifyReport(size, self.builder.size, len(self.checkpoints), latest, problem)


def verify_export(
    lines: Iterable[str], verifiers: list[NoteVerifier], origin: str, mac_key: bytes | None = None,
    listed: Mapping[int, bytes] | None = None,
) -> VerifyReport:
    """Check a ``consent-gateway/audit-export@1`` file offline against trusted ``verifiers``;
    ``listed`` adds roots signed elsewhere (a shard's in the combined notes) to check at their size.

    A regulator has no MAC key; the checkpoints (signed) and the chain carry the proof.
    """
    reader = ExportReader(lines)
    checkpoints, problem = _open_checkpoints(reader.notes, verifiers, origin)
    for size, root in (listed or {}).items():
        signed = checkpoints.setdefault(size, Checkpoint(origin, size, root))
        if signed.root != root or (size == 0 and root != EMPTY_ROOT):
            problem = problem or Problem(None, f"a combined checkpoint lists another root at size {size} "
                                               "than the shard's own checkpoint")
    scan = _Scan(checkpoints, mac_key)
    if problem is None and reader.size and not checkpoints:
        problem = Problem(None, "the export holds no checkpoint: nothing signed to check against")
    if problem is not None:
        return scan.report(reader.size, problem)
    expected = 0
    try:
        for item in reader.entries():
            if item.index != expected:
                gap = Problem(min(expected, item.index), "entry is missing or out of order")
                return scan.report(reader.size, gap)
            problem = scan.feed(item.index, item.record)
            if problem:
                return scan.report(reader.size, problem)
            expected += 1
    except AuditError as error:
        return scan.report(reader.size, Problem(expected, str(error)))
    if expected != reader.size:
        return scan.report(reader.size, Problem(expected, "entry is missing"))
    return scan.report(reader.size, scan.finish(reader.size))


def _stored_node_problem(log: AuditLog, nodes: list[tuple[Coord, bytes]], sealed: int) -> Problem | None:
    """Compare finished subtrees (level >= 1, inside the sealed size) with the stored ones."""
    by_level: dict[int, dict[int, bytes]] = {}
    for (level, index), value in nodes:
        if level >= 1 and (index + 1) << level <= sealed:
            by_level.setdefault(level, {})[index] = value
    for level, values in sorted(by_level.items()):
        first, last = min(values), max(values)
        stored = log.tiles.read_level(level, first, last + 1)
        for index, value in sorted(values.items()):
            if stored[index - first] != value:
                start = index << level
                return Problem(start, f"stored hash of subtree [{start}, {(index + 1) << level}) is wrong")
    return None


def _resume_after_archive(log: AuditLog, scan: _Scan, archived: int, sealed: int) -> Problem | None:
    """Walk the archived part through its stored leaf hashes (the records are in archive
    files): every stored subtree must be the hash of its children and every checkpoint it
    covers must match, so the tree below the boundary is as signed. Then the entry walk
    resumes at the boundary."""
    if archived > sealed:
        return Problem(archived, "the archive boundary lies beyond the sealed tree")
    for start in range(0, archived, BATCH):
        stop = min(archived, start + BATCH)
        for index, leaf in enumerate(log.tiles.read_level(0, start, stop), start):
            if leaf is None:
                return Problem(index, "the leaf hash of an archived entry is missing")
            scan.nodes.extend(scan.builder.push(leaf))
            scan.previous = leaf
            checkpoint = scan.checkpoints.get(index + 1)
            if checkpoint is not None:
                if scan.builder.root() != checkpoint.root:
                    return Problem(scan.signed_to, f"the stored tree below the archive boundary "
                                                   f"differs from the checkpoint at size {index + 1}")
                scan.signed_to = index + 1
        problem = _stored_node_problem(log, scan.nodes, sealed)
        scan.nodes.clear()
        if problem:
            return problem
    return None


def _mac_mismatch(log: AuditLog, problem: Problem, start: int, size: int) -> Problem:
    """With no checkpoint to go by, ``problem`` at the first entry: if the first, the middle
    and the last entry all fail their MAC alone (each otherwise well-formed), the log was
    written with another audit key — a settings mismatch, not one altered entry."""
    for entry in log.read_entries(sorted({start, (start + size) // 2, size - 1})):
        if isinstance(entry, str) or check_entry(entry, None) is not None:
            return problem
        if check_entry(entry, log.keys.mac_key) is None:
            return problem
    mismatch = Mismatch("mac_key", "another key", log.keys.signer.verifier.key_id.hex())
    return Problem(problem.index, mismatch_reason(mismatch), mismatch)


def verify_log(log: AuditLog, verifiers: list[NoteVerifier] | None = None) -> VerifyReport:
    """Check the live log in Redis with the gateway's own keys (and any other trusted keys)."""
    report = _verify_live(log, verifiers)
    problem = report.problem
    if problem is None or problem.index is None or report.checkpoints_checked:
        return report
    start = archived_size(log)
    if problem.index != start:  # not the very first entry checked: no settings question
        return report
    return VerifyReport(report.size, report.entries_checked, report.checkpoints_checked,
                        report.latest_checkpoint, _mac_mismatch(log, problem, start, report.size))


def _verify_live(log: AuditLog, verifiers: list[NoteVerifier] | None) -> VerifyReport:
    trusted = verifiers if verifiers is not None else [log.keys.signer.verifier]
    notes = [note for _, note in stored_notes(log)]
    redis_client, keys = log.store.redis, log.shard_keys
    size, sealed = log.size(), log.sealer.sealed_size()
    checkpoints, problem = _open_checkpoints(notes, trusted, log.origin)
    scan = _Scan(checkpoints, log.keys.mac_key)
    if problem is not None:
        return scan.report(size, problem)
    if sealed > size:
        return scan.report(size, Problem(size, f"the tree was sealed to {sealed} entries but the log "
                                               f"holds {size}: entries from {size} on were removed"))
    archived = archived_size(log)
    if archived:
        problem = _resume_after_archive(log, scan, archived, min(size, sealed))
        if problem:
            return scan.report(size, problem)
    for start in range(archived, size, BATCH):
        stop = min(size, start + BATCH)
        raws = log.read_records(range(start, stop))
        leaves = log.tiles.read_level(0, start, min(stop, sealed)) if start < sealed else []
        for index, raw in enumerate(raws, start):
            stored = leaves[index - start] if index - start < len(leaves) else None
            if index < sealed and stored is None:
                return scan.report(size, Problem(index, "sealed leaf hash is missing from the tree"))
            problem = scan.feed(index, raw, stored)
            if problem:
                return scan.report(size, problem)
        problem = _stored_node_problem(log, scan.nodes, sealed)
        scan.nodes.clear()
        if problem:
            return scan.report(size, problem)
    head = cast(bytes | None, redis_client.get(keys.audit_head()))
    if size and head != scan.previous:
        return scan.report(size, Problem(size - 1, "the log's head is not the last entry's hash"))
    if redis_client.hexists(keys.audit_entries(), str(size)):
        return scan.report(size, Problem(size, "an entry is stored beyond the log's size"))
    return scan.report(size, scan.finish(size))


def verify_audit(logs: list[AuditLog]) -> VerifyReport:
    """The whole log with the gateway's own keys: one shard as :func:`verify_log`, several as
    :func:`verify_shards`; a log signed with another shard count is a settings mismatch."""
    found = shards_signed(logs[0])
    if found is not None and found != len(logs):
        mismatch = Mismatch("shards", str(found), str(len(logs)))
        return VerifyReport(sum(log.size() for log in logs), 0, 0, 0,
                            Problem(None, mismatch_reason(mismatch), mismatch))
    return verify_log(logs[0]) if len(logs) == 1 else verify_shards(logs)


def verify_shards(logs: list[AuditLog], verifiers: list[NoteVerifier] | None = None) -> VerifyReport:
    """Check every shard as :func:`verify_log` does, then every combined checkpoint against
    the shards: sums over the shards, the first problem carrying its shard."""
    reports = tuple(verify_log(log, verifiers) for log in logs)
    if any(report.problem is not None for report in reports):
        return _summed(reports, 0)
    combined, problem = _combined_problem(logs, verifiers)
    return _summed(reports, combined, problem)


def _combined_problem(logs: list[AuditLog],
                      verifiers: list[NoteVerifier] | None) -> tuple[int, Problem | None]:
    """The combined notes in sequence (:func:`_open_combined`), then each shard's size and root
    in them against what its (verified) tree says."""
    first = logs[0]
    trusted = verifiers if verifiers is not None else [first.keys.signer.verifier]
    notes = [note for _, note in stored_combined_notes(first)]
    opened, problem = _open_combined(notes, trusted, first.keys.signer.name, len(logs))
    if problem is not None:
        return len(opened), problem
    sizes = [log.size() for log in logs]
    sealed = [log.sealer.sealed_size() for log in logs]
    for number, combined in enumerate(opened):
        for shard, (log, listed) in enumerate(zip(logs, combined.shards, strict=True)):
            if listed.size > sizes[shard]:
                return number, Problem(sizes[shard], f"a combined checkpoint lists {listed.size} entries "
                                                     f"but the shard holds {sizes[shard]}: entries from "
                                                     f"{sizes[shard]} on were removed", shard=shard)
            if listed.size > sealed[shard]:
                return number, Problem(sealed[shard], f"a combined checkpoint lists {listed.size} "
                                                      f"entries but the tree is sealed to {sealed[shard]}",
                                       shard=shard)
            root = root_at(listed.size, log.tiles) if listed.size else EMPTY_ROOT
            if root != listed.root:
                return number, Problem(None, f"combined checkpoint #{number}: the shard's first "
                                             f"{listed.size} entries have another root", shard=shard)
    return len(opened), None


def _open_combined(notes: list[str], verifiers: list[NoteVerifier], origin: str,
                   shards: int) -> tuple[list[CombinedCheckpoint], Problem | None]:
    """Each combined note, in order: signed by a trusted key for ``origin``, listing the
    ``shards`` shards, and no shard smaller than in the note before."""
    opened: list[CombinedCheckpoint] = []
    floor = [0] * shards
    for number, note in enumerate(notes):
        try:
            combined = verify_combined(note, verifiers, origin, shards)
        except CheckpointError as error:
            return opened, Problem(None, f"combined checkpoint #{number}: {error}")
        for shard, listed in enumerate(combined.shards):
            if listed.size < floor[shard]:
                return opened, Problem(None, f"combined checkpoint #{number} lists {listed.size} entries "
                                             f"where an earlier one listed {floor[shard]}", shard=shard)
            floor[shard] = listed.size
        opened.append(combined)
    return opened, None


def verify_shard_exports(open_export: Callable[[int], Iterable[str]], shards: int,
                         verifiers: list[NoteVerifier], origin: str) -> VerifyReport:
    """Check the verification exports of every shard offline (``open_export(i)`` gives shard
    i's lines; shard 0's carries the combined notes): each as :func:`verify_export` under its
    origin, and each root a combined note lists must be the one the shard's entries give."""
    notes = ExportReader(open_export(0)).combined
    opened, problem = _open_combined(notes, verifiers, origin, shards)
    if problem is None and not notes:
        problem = Problem(None, "shard 0's export holds no combined checkpoint: nothing is signed "
                                "over the shards")
    listed: list[dict[int, bytes]] = [{} for _ in range(shards)]
    for number, combined in enumerate(opened):
        for shard, checkpoint in enumerate(combined.shards):
            if listed[shard].setdefault(checkpoint.size, checkpoint.root) != checkpoint.root:
                problem = problem or Problem(None, f"combined checkpoint #{number} lists another root at "
                                                   f"size {checkpoint.size} than an earlier one", shard=shard)
    if problem is not None:
        return VerifyReport(0, 0, 0, 0, problem)
    reports = tuple(verify_export(open_export(shard), verifiers, shard_origin(origin, shard),
                                  listed=listed[shard]) for shard in range(shards))
    return _summed(reports, len(notes))


def _summed(reports: tuple[VerifyReport, ...], combined: int, problem: Problem | None = None) -> VerifyReport:
    """One report over the shards' reports: sums, and the first problem carrying its shard."""
    problem = problem or next((replace(report.problem, shard=shard) for shard, report in enumerate(reports)
                               if report.problem is not None), None)
    return VerifyReport(sum(r.size for r in reports), sum(r.entries_checked for r in reports),
                        sum(r.checkpoints_checked for r in reports) + combined,
                        sum(r.latest_checkpoint for r in reports), problem, reports)
