"""Signing checkpoints regularly, and keeping them in Redis.

A checkpoint is signed at least every ``every_events`` entries or every ``every_seconds``
(whichever comes first, and only when the log has grown). Every process may call
:meth:`Checkpointer.after_append` after its appends: it costs nothing until a checkpoint is
due by the process' own count, and then one process at a time (a short Redis lock) seals and
signs. :meth:`Checkpointer.run` is the timer for quiet periods. Checkpoints are kept in a
sorted set scored by tree size, so they list in order and one at a given size is found fast.

The lock lives ``LOCK_TTL_MS`` (a few seconds) and is renewed by a small thread every third
of that while its holder seals and signs, so a process killed mid-signing delays the others
by seconds; renewal and release compare the holder's random token first (Lua), and the
checkpoint is stored by a script that checks the token in the same step, so a holder that
lost its lock (paused past the TTL) never stores what it signed alongside the new holder's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import redis

from gateway.audit.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from gateway.audit.note import NoteSigner

if TYPE_CHECKING:
    from gateway.audit.log import AuditLog

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Compare-and-extend: only the holder's token renews the lock.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Store a signed checkpoint only while still holding the lock (KEYS: lock, checkpoints).
_STORE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
"""
LOCK_TTL_MS = 5_000


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str
    signed_at_ms: int

    def to_json(self) -> str:
        return note_member(self.note, self.signed_at_ms)

    @classmethod
    def from_json(cls, data: str | bytes, signer: NoteSigner) -> SignedCheckpoint:
        """Parse a stored checkpoint, checking its signature with our own key."""
        note, signed_at_ms = read_note_member(data)
        return cls(verify_checkpoint(note, [signer.verifier]), note, signed_at_ms)


def note_member(note: str, signed_at_ms: int) -> str:
    """A signed note as a member of a sorted set of notes (checkpoints, combined checkpoints)."""
    return json.dumps({"note": note, "signed_at_ms": signed_at_ms}, sort_keys=True)


def read_note_member(data: str | bytes) -> tuple[str, int]:
    """The note and signing time of a :func:`note_member` (not yet verified)."""
    fields = json.loads(data)
    return str(fields["note"]), int(fields["signed_at_ms"])


def stored_notes(log: AuditLog) -> list[tuple[int, str]]:
    """Every stored checkpoint note with the size it is filed under, unverified, in size order
    (those the cold tier holds too, gateway/audit/tiering.py)."""
    return merged_rows(cold_note_rows(log, "checkpoints/"),
                       stored_note_rows(log, log.shard_keys.audit_checkpoints()))


def cold_note_rows(log: AuditLog, folder: str) -> list[tuple[int, str]]:
    """The notes moved to the cold tier's ``folder`` (JSON lines ``[size, stored member]``)."""
    if log.cold is None:
        return []
    rows: list[tuple[int, str]] = []
    for name in log.cold.names(log.objects.prefix + folder):
        for line in (log.cold.get(name) or b"").splitlines():
            try:
                size, member = json.loads(line)
                rows.append((int(size), _note_of(str(member).encode())))
            except (ValueError, TypeError):
                rows.append((-1, line.decode("utf-8", errors="replace")))  # fails verification
    return rows


def merged_rows(*sources: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """One list in size order; a note in both tiers (moved while read) counts once."""
    return sorted({row for source in sources for row in source})


def stored_note_rows(log: AuditLog, key: str) -> list[tuple[int, str]]:
    """The notes of a sorted set of signed notes with their scores, unverified, in score order."""
    rows = cast(list[tuple[bytes, float]], log.store.redis.zrange(key, 0, -1, withscores=True))
    return [(int(score), _note_of(member)) for member, score in rows]


def _note_of(member: bytes) -> str:
    """The note in a stored member; a mangled member comes back as is, to fail verification."""
    try:
        return str(json.loads(member)["note"])
    except (ValueError, KeyError, TypeError):
        return member.decode("utf-8", errors="replace")


class Checkpointer:
    def __init__(
        self,
        log: AuditLog,
        signer: NoteSigner,
        every_events: int = 1000,
        every_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if every_events < 1 or every_seconds <= 0:
            raise ValueError("checkpoint intervals must be positive")
        self.log = log
        self.signer = signer
        # tlog-checkpoint: the key name should equal the origin (it does for shard 0; the other
        # shards name their shard after it, gateway/audit/shards.py)
        self.origin = log.origin
        self.every_events = every_events
        self.every_seconds = every_seconds
        self._clock = clock
        self._release = log.store.redis.register_script(_RELEASE)
        self._renew = log.store.redis.register_script(_RENEW)
        self._store_signed = log.store.redis.register_script(_STORE)
        self.lock_ttl_ms = LOCK_TTL_MS
        self._held: str | None = None  # the token of the lock this process holds right now
        self._known: tuple[int, float] | None = None  # (size, signed at) of the latest seen
        self._started = clock()  # with no checkpoint yet, the T-second clock starts here

    def latest(self) -> SignedCheckpoint | None:
        rows = cast(list[bytes], self.log.store.redis.zrange(self.log.shard_keys.audit_checkpoints(), -1, -1))
        return SignedCheckpoint.from_json(rows[0], self.signer) if rows else None

    def history(self, min_size: int = 0, limit: int = 100) -> list[SignedCheckpoint]:
        """Checkpoints with tree size ``>= min_size``, smallest first."""
        rows = cast(list[bytes], self.log.store.redis.zrangebyscore(
            self.log.shard_keys.audit_checkpoints(), min_size, "+inf", start=0, num=limit))
        return [SignedCheckpoint.from_json(row, self.signer) for row in rows]

    def at_size(self, size: int) -> SignedCheckpoint | None:
        rows = self.history(size, 1)
        return rows[0] if rows and rows[0].checkpoint.size == size else None

    def _due(self, size: int, latest: tuple[int, float]) -> bool:
        grown = size - latest[0]
        return grown >= self.every_events or (grown > 0 and self._clock() - latest[1] >= self.every_seconds)

    def _refresh(self) -> tuple[int, float]:
        latest = self.latest()
        if latest is None:
            self._known = (0, self._started)
        else:
            self._known = (latest.checkpoint.size, latest.signed_at_ms / 1000)
        return self._known

    def due_after(self, index: int) -> bool:
        """Whether a checkpoint may be due once entry ``index`` is appended, judged from what this
        process last saw (no Redis read unless it has seen nothing yet)."""
        return self._due(index + 1, self._known or self._refresh())

    def after_append(self, index: int) -> SignedCheckpoint | None:
        """Call after appending entry ``index``; signs a checkpoint when one is due."""
        return self.maybe_checkpoint() if self.due_after(index) else None

    def maybe_checkpoint(self) -> SignedCheckpoint | None:
        """Sign a checkpoint if one is due (reads the log's state from Redis)."""
        return self.checkpoint() if self.is_due() else None

    def is_due(self) -> bool:
        """Whether a checkpoint is due now (reads the log's state from Redis)."""
        return self._due(self.log.size(), self._refresh())

    def checkpoint(self) -> SignedCheckpoint | None:
        """Seal to the current size and sign; ``None`` if another process is signing right now
        or the latest checkpoint already has this size (or this process lost the lock while
        signing: the new holder signs instead)."""
        with self.holding_lock() as token:
            return None if token is None else self.sign_holding(token)

    @contextlib.contextmanager
    def holding_lock(self) -> Iterator[str | None]:
        """Hold the checkpoint lock (renewed) for the body: yields its token, or ``None`` when
        another process holds it. Released afterwards."""
        token = secrets.token_hex(16)
        if not self.log.store.redis.set(self.log.shard_keys.audit_checkpoint_lock(), token, nx=True,
                                        px=self.lock_ttl_ms):
            yield None
            return
        self._held = token
        try:
            with self._renewing(token):
                yield token
        finally:
            self._release_token(token)

    def sign_holding(self, token: str) -> SignedCheckpoint | None:
        """The body of :meth:`checkpoint`, for a caller already holding the lock as ``token``."""
        size = self.log.size()
        latest = self.latest()
        if latest is not None and latest.checkpoint.size >= size:
            return None
        root = self.log.root(size)  # seals first: only checked entries are signed
        checkpoint = Checkpoint(self.origin, size, root)
        signed = SignedCheckpoint(checkpoint, sign_checkpoint(checkpoint, self.signer), self.now_ms())
        if not self.store_holding(token, self.log.shard_keys.audit_checkpoints(), signed.to_json(), size):
            return None
        self._known = (size, signed.signed_at_ms / 1000)
        return signed

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def store_holding(self, token: str, key: str, member: str, score: int) -> bool:
        """Add ``member`` to the sorted set ``key`` (in this log's slot) only while the lock is
        still ``token``'s: False, and a warning, when it was lost while signing."""
        if self._store_signed(keys=[self.log.shard_keys.audit_checkpoint_lock(), key],
                              args=[token, member, score]):
            return True
        log.warning("audit checkpoint lock lost while signing; not stored", extra={"size": score})
        return False

    @contextlib.contextmanager
    def _renewing(self, token: str) -> Iterator[None]:
        """Extend the lock every third of its TTL while the body runs (a daemon thread: a
        process that dies stops renewing, and the lock expires within the TTL)."""
        done = threading.Event()
        key = self.log.shard_keys.audit_checkpoint_lock()

        def renew() -> None:
            while not done.wait(self.lock_ttl_ms / 3000):
                try:
                    if not self._renew(keys=[key], args=[token, self.lock_ttl_ms]):
                        return  # lost (expired while Redis was away): the store step will see it
                except redis.RedisError as error:
                    log.warning("audit checkpoint lock not renewed", extra={"reason": type(error).__name__})

        renewer = threading.Thread(target=renew, name="audit-checkpoint-lock", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join(timeout=1)

    def release_lock(self) -> bool:
        """Release the checkpoint lock if this process holds it (after signing, and at shutdown,
        so that the next process need not wait for the TTL); never raises."""
        token = self._held
        return False if token is None else self._release_token(token)

    def _release_token(self, token: str) -> bool:
        if self._held == token:
            self._held = None
        try:
            return bool(self._release(keys=[self.log.shard_keys.audit_checkpoint_lock()], args=[token]))
        except redis.RedisError as error:
            log.warning("audit checkpoint lock not released; it expires by itself",
                        extra={"reason": type(error).__name__, "ttl_ms": self.lock_ttl_ms})
            return False

    def run(self, stop: threading.Event, poll_seconds: float | None = None) -> None:
        """Check every ``poll_seconds`` (default: a quarter of ``every_seconds``, at most 1 s)
        until ``stop`` is set."""
        interval = poll_seconds if poll_seconds is not None else min(1.0, max(0.05, self.every_seconds / 4))
        while not stop.wait(interval):
            try:
                self.maybe_checkpoint()
            except Exception as error:  # noqa: BLE001 - a timer thread logs and carries on
                log.error("audit checkpoint failed", extra={"reason": type(error).__name__})
