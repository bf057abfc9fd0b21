"""Signing checkpoints regularly, and keeping them in Redis.

A checkpoint is signed at least every ``every_events`` entries or every ``every_seconds``
(whichever comes first, and only when the log has grown). Every process may call
:meth:`Checkpointer.after_append` after its appends: it costs nothing until a checkpoint is
due by the process' own count, and then one process at a time (a short Redis lock) seals and
signs. :meth:`Checkpointer.run` is the timer for quiet periods. Checkpoints are kept in a
sorted set scored by tree size, so they list in order and one at a given size is found fast.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from gateway.audit.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from gateway.audit.note import NoteSigner

if TYPE_CHECKING:
    from gateway.audit.log import AuditLog

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_LOCK_MS = 60_000


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str
    signed_at_ms: int

    def to_json(self) -> str:
        return json.dumps({"note": self.note, "signed_at_ms": self.signed_at_ms}, sort_keys=True)

    @classmethod
    def from_json(cls, data: str | bytes, signer: NoteSigner) -> SignedCheckpoint:
        """Parse a stored checkpoint, checking its signature with our own key."""
        fields = json.loads(data)
        note = str(fields["note"])
        return cls(verify_checkpoint(note, [signer.verifier]), note, int(fields["signed_at_ms"]))


def stored_notes(log: AuditLog) -> list[tuple[int, str]]:
    """Every stored checkpoint note with the size it is filed under, unverified, in size order."""
    rows = cast(list[tuple[bytes, float]],
                log.store.redis.zrange(log.store.keys.audit_checkpoints(), 0, -1, withscores=True))
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
        self.origin = signer.name  # tlog-checkpoint: the key name should equal the origin
        self.every_events = every_events
        self.every_seconds = every_seconds
        self._clock = clock
        self._release = log.store.redis.register_script(_RELEASE)
        self._known: tuple[int, float] | None = None  # (size, signed at) of the latest seen
        self._started = clock()  # with no checkpoint yet, the T-second clock starts here

    def latest(self) -> SignedCheckpoint | None:
        rows = cast(list[bytes], self.log.store.redis.zrange(self.log.store.keys.audit_checkpoints(), -1, -1))
        return SignedCheckpoint.from_json(rows[0], self.signer) if rows else None

    def history(self, min_size: int = 0, limit: int = 100) -> list[SignedCheckpoint]:
        """Checkpoints with tree size ``>= min_size``, smallest first."""
        rows = cast(list[bytes], self.log.store.redis.zrangebyscore(
            self.log.store.keys.audit_checkpoints(), min_size, "+inf", start=0, num=limit))
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
        if not self._due(self.log.size(), self._refresh()):
            return None
        return self.checkpoint()

    def checkpoint(self) -> SignedCheckpoint | None:
        """Seal to the current size and sign; ``None`` if another process is signing right now
        or the latest checkpoint already has this size."""
        redis_client, keys = self.log.store.redis, self.log.store.keys
        token = secrets.token_hex(16)
        if not redis_client.set(keys.audit_checkpoint_lock(), token, nx=True, px=_LOCK_MS):
            return None
        try:
            size = self.log.size()
            latest = self.latest()
            if latest is not None and latest.checkpoint.size >= size:
                return None
            root = self.log.root(size)  # seals first: only checked entries are signed
            checkpoint = Checkpoint(self.origin, size, root)
            signed = SignedCheckpoint(checkpoint, sign_checkpoint(checkpoint, self.signer),
                                      int(self._clock() * 1000))
            redis_client.zadd(keys.audit_checkpoints(), {signed.to_json(): size})
            self._known = (size, signed.signed_at_ms / 1000)
            return signed
        finally:
            self._release(keys=[keys.audit_checkpoint_lock()], args=[token])

    def run(self, stop: threading.Event, poll_seconds: float | None = None) -> None:
        """Check every ``poll_seconds`` (default: a quarter of ``every_seconds``, at most 1 s)
        until ``stop`` is set."""
        interval = poll_seconds if poll_seconds is not None else min(1.0, max(0.05, self.every_seconds / 4))
        while not stop.wait(interval):
            self.maybe_checkpoint()
