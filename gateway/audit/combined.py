"""One signed checkpoint over every shard: ``consent-gateway/audit-shards@1``.

With K > 1 shards each shard signs its own checkpoints (its origin, size and root, a plain
c2sp.org/tlog-checkpoint), and at every checkpoint interval one signed note lists them all,
so one signature commits to the whole state of the log at that moment::

    consent-gateway/audit-shards@1
    <origin>
    <origin of shard 0> <size> <base64 root>
    <origin of shard 1> <size> <base64 root>
    ...

    — <origin> <base64 signature>

The note is a C2SP signed note by the audit key (named by ``<origin>``); a shard line holds
the same three values as that shard's own checkpoint, so a shard's inclusion proof checks
against the combined note. Its first line is no origin and its second no decimal size, so it
cannot be taken for a checkpoint of any log.

The combined note is signed by whoever holds shard 0's checkpoint lock: it signs shard 0, then
each other shard under that shard's lock, then the note, stored by a script that checks shard
0's lock in the same step (the combined notes live in shard 0's slot). So the combined notes
are one sequence in which no shard ever shrinks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.checkpointer import (
    SignedCheckpoint,
    cold_note_rows,
    merged_rows,
    note_member,
    read_note_member,
    stored_note_rows,
)
from gateway.audit.errors import CheckpointError
from gateway.audit.note import NoteSigner, NoteVerifier, open_note, sign_note
from gateway.audit.shards import shard_origin

if TYPE_CHECKING:
    from gateway.audit.checkpointer import Checkpointer
    from gateway.audit.log import AuditLog

COMBINED_FORMAT = "consent-gateway/audit-shards@1"


@dataclass(frozen=True, slots=True)
class CombinedCheckpoint:
    origin: str
    shards: tuple[Checkpoint, ...]  # shard i's origin, size and root, in shard order

    @property
    def total_size(self) -> int:
        return sum(shard.size for shard in self.shards)

    def text(self) -> str:
        """The note text that gets signed."""
        lines = [COMBINED_FORMAT, self.origin]
        lines += [" ".join(shard.text().rstrip("\n").split("\n")) for shard in self.shards]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> CombinedCheckpoint:
        """Parse (already verified) note text; each shard line is checked as a checkpoint is."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[0] != COMBINED_FORMAT or lines[-1] != "":
            raise CheckpointError(f"not a {COMBINED_FORMAT} note")
        shards = []
        for line in lines[2:-1]:
            words = line.split(" ")
            if len(words) != 3:
                raise CheckpointError("a shard line is: origin, size, base64 root")
            shards.append(Checkpoint.parse("".join(f"{word}\n" for word in words)))
        return cls(lines[1], tuple(shards))

    def covers(self, checkpoint: Checkpoint) -> bool:
        """Whether ``checkpoint`` is one of the shard states this note commits to."""
        return any((shard.origin, shard.size, shard.root) ==
                   (checkpoint.origin, checkpoint.size, checkpoint.root) for shard in self.shards)


def combine(origin: str, checkpoints: list[Checkpoint]) -> CombinedCheckpoint:
    """The combined checkpoint over shard checkpoints (their extension lines are not listed)."""
    return CombinedCheckpoint(origin, tuple(Checkpoint(c.origin, c.size, c.root) for c in checkpoints))


def verify_combined(note: str, verifiers: list[NoteVerifier], origin: str,
                    shards: int | None = None) -> CombinedCheckpoint:
    """Open a combined note with the trusted keys: signed, for ``origin``, and listing shards
    ``0 … K-1`` in order under their origins (exactly ``shards`` of them, if given)."""
    combined = CombinedCheckpoint.parse(open_note(note, verifiers).text)
    if combined.origin != origin:
        raise CheckpointError(f"combined checkpoint is for log {combined.origin!r}, not {origin!r}")
    expected = [shard_origin(origin, i) for i in range(len(combined.shards))]
    if [shard.origin for shard in combined.shards] != expected:
        raise CheckpointError("combined checkpoint does not list the shards in order under their origins")
    if shards is not None and len(combined.shards) != shards:
        raise CheckpointError(f"combined checkpoint lists {len(combined.shards)} shards, not {shards}")
    return combined


@dataclass(frozen=True, slots=True)
class SignedCombined:
    combined: CombinedCheckpoint
    note: str
    signed_at_ms: int

    def to_json(self) -> str:
        return note_member(self.note, self.signed_at_ms)

    @classmethod
    def from_json(cls, data: str | bytes, signer: NoteSigner) -> SignedCombined:
        """Parse a stored combined checkpoint, checking its signature with our own key."""
        note, signed_at_ms = read_note_member(data)
        return cls(verify_combined(note, [signer.verifier], signer.name), note, signed_at_ms)


@dataclass(frozen=True, slots=True)
class CheckpointRound:
    """What one round of signing produced: each shard's new checkpoint (``None`` where the
    shard had not grown or another process held its lock) and the combined note, if stored."""

    shards: tuple[SignedCheckpoint | None, ...]
    combined: SignedCombined | None


def shards_signed(log: AuditLog) -> int | None:
    """How many shards the latest combined note (in shard 0's slot) lists; ``None``: no note
    signed by our key, the log was never sharded. A gateway configured with another count would
    send people's events to other shards than their history: that is refused, not guessed."""
    rows = cast(list[bytes], log.store.redis.zrange(log.shard_keys.audit_combined_checkpoints(), -1, -1))
    try:
        return len(SignedCombined.from_json(rows[0], log.keys.signer).combined.shards) if rows else None
    except (CheckpointError, ValueError, KeyError, TypeError):
        return None  # not a note of ours: verify reports it


def stored_combined_notes(log: AuditLog) -> list[tuple[int, str]]:
    """Every stored combined note (kept in shard 0's slot), unverified, filed by total size."""
    return merged_rows(cold_note_rows(log, "combined/"),
                   stored_note_rows(log, log.shard_keys.audit_combined_checkpoints()))


class ShardedCheckpointer:
    """Signs every shard's checkpoint and the combined note over them, one round at a time."""

    def __init__(self, checkpointers: list[Checkpointer]) -> None:
        if [cp.log.shard for cp in checkpointers] != list(range(len(checkpointers))):
            raise ValueError("one checkpointer per shard, in shard order")
        self.checkpointers = checkpointers
        self.first = checkpointers[0]
        self._key = self.first.log.shard_keys.audit_combined_checkpoints()

    def latest(self) -> SignedCombined | None:
        rows = cast(list[bytes], self.first.log.store.redis.zrange(self._key, -1, -1))
        return SignedCombined.from_json(rows[0], self.first.signer) if rows else None

    def history(self, min_total: int = 0, limit: int = 100) -> list[SignedCombined]:
        """Combined checkpoints covering at least ``min_total`` entries in all, oldest first."""
        rows = cast(list[bytes], self.first.log.store.redis.zrangebyscore(
            self._key, min_total, "+inf", start=0, num=limit))
        return [SignedCombined.from_json(row, self.first.signer) for row in rows]

    def forget_lost_history(self, shard: int) -> int:
        """After a new epoch of ``shard``: remove the combined notes whose line for it the shard
        no longer matches (more entries than it holds, or another root); returns how many."""
        redis_client = self.first.log.store.redis
        stale = [member for member in cast(list[bytes], redis_client.zrange(self._key, 0, -1))
                 if self._contradicts(member, self.checkpointers[shard].log)]
        return int(redis_client.zrem(self._key, *stale)) if stale else 0

    def _contradicts(self, member: bytes, log: AuditLog) -> bool:
        try:
            listed = SignedCombined.from_json(member, self.first.signer).combined.shards[log.shard]
        except (CheckpointError, ValueError, KeyError, IndexError):
            return False  # not ours to judge: verify reports it
        return listed.size > log.size() or log.root(listed.size) != listed.root

    def maybe_checkpoint(self) -> CheckpointRound | None:
        """A round when any shard has a checkpoint due (by count or by time)."""
        if not any(cp.is_due() for cp in self.checkpointers):
            return None
        return self.checkpoint()

    def checkpoint(self) -> CheckpointRound | None:
        """Sign each shard that grew, then the combined note over every shard's latest
        checkpoint; ``None`` if another process holds shard 0's lock (it is signing)."""
        with self.first.holding_lock() as token:
            if token is None:
                return None
            signed = (self.first.sign_holding(token), *(cp.checkpoint() for cp in self.checkpointers[1:]))
            latest = [mine or cp.latest() for mine, cp in zip(signed, self.checkpointers, strict=True)]
            current = [item.checkpoint for item in latest if item is not None]
            if len(current) < len(latest):  # a shard's first checkpoint is being signed elsewhere
                return CheckpointRound(signed, None)
            combined = combine(self.first.signer.name, current)
            previous = self.latest()
            if previous is not None and previous.combined == combined:
                return CheckpointRound(signed, None)
            result = SignedCombined(combined, sign_note(combined.text(), [self.first.signer]),
                                    self.first.now_ms())
            stored = self.first.store_holding(token, self._key, result.to_json(), combined.total_size)
            return CheckpointRound(signed, result if stored else None)


def verify_in_combined(checkpoint: Checkpoint, note: str, verifiers: list[NoteVerifier],
                       origin: str) -> CombinedCheckpoint:
    """Check that the combined note (signed by a trusted key for the log ``origin``) lists the
    shard ``checkpoint`` — the one a shard's tlog-proof carries — with the same size and root."""
    combined = verify_combined(note, verifiers, origin)
    if not combined.covers(checkpoint):
        raise CheckpointError(f"the combined checkpoint does not list {checkpoint.origin!r} at size "
                              f"{checkpoint.size} with this root")
    return combined
