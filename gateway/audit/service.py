"""The one object the rest of the gateway holds: append, checkpoint, query, prove, verify.

Call sites (OIDC flows, consent, staff API, CLI) build an :class:`AuditEvent` and call
:meth:`AuditService.record`; they never touch Redis keys or the tree.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from gateway.audit.checkpointer import Checkpointer, SignedCheckpoint
from gateway.audit.cold import DEFAULT_LAYOUT, FileColdStore, TierLayout
from gateway.audit.combined import CheckpointRound, ShardedCheckpointer
from gateway.audit.continuity import Continuity, ContinuityError, ShardedContinuity
from gateway.audit.errors import AuditError
from gateway.audit.events import AuditEvent
from gateway.audit.keyfile import load_audit_keys
from gateway.audit.log import Appended, AuditLog
from gateway.audit.proofs import TlogProof, prove_latest
from gateway.audit.query import AuditQuery
from gateway.audit.shard_query import ShardedQuery
from gateway.audit.shards import shard_of_event, shard_of_person
from gateway.audit.tiering import Moved, Tiering
from gateway.audit.verify import VerifyReport, verify_audit

if TYPE_CHECKING:
    from gateway.store import Store
    from gateway.vault.sealing import KekSealer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LatestNote:
    """The newest signed note the whole log can be checked against."""

    size: int  # entries it covers (with shards: in all shards)
    note: str
    signed_at_ms: int


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard's log, its checkpoints and (in a serving gateway) its continuity."""

    log: AuditLog
    checkpointer: Checkpointer
    continuity: Continuity | None


class AuditService:
    def __init__(self, store: Store, keys_dir: Path, origin: str, every_events: int = 1000,
                 every_seconds: float = 60.0, sealer: KekSealer | None = None,
                 data_dir: Path | None = None, shards: int = 1, cold_dir: Path | None = None,
                 hot_entries: int = 262_144, layout: TierLayout = DEFAULT_LAYOUT) -> None:
        self.keys = load_audit_keys(keys_dir, origin, sealer)
        cold = FileColdStore(cold_dir) if cold_dir is not None else None
        logs = [AuditLog(store, self.keys, shard, cold, layout) for shard in range(shards)]
        # Only a serving gateway remembers what it signed; CLI commands open the log without.
        self.shards = [
            Shard(shard_log, Checkpointer(shard_log, self.keys.signer, every_events, every_seconds),
                  Continuity(shard_log, self.keys.signer, data_dir, shards) if data_dir else None)
            for shard_log in logs]
        self.log = logs[0]  # the log, when there is one shard
        self.checkpointer = self.shards[0].checkpointer
        # With several shards every round of checkpoints ends in one note signed over all.
        self.combined = ShardedCheckpointer([s.checkpointer for s in self.shards]) if shards > 1 else None
        continuities = [s.continuity for s in self.shards if s.continuity is not None]
        self.continuity: Continuity | ShardedContinuity | None = (
            None if not continuities else continuities[0] if shards == 1 else ShardedContinuity(continuities))
        self.query = ShardedQuery([AuditQuery(shard_log) for shard_log in logs])
        self.tiering = [] if cold is None else [
            Tiering(s.log, s.checkpointer, hot_entries, combined=s.log.shard == 0 and shards > 1)
            for s in self.shards]
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def verifier_key(self) -> str:
        """The published key (``<origin>+<id>+<base64>``) anyone checks checkpoints and proofs with."""
        return self.keys.signer.verifier.to_string()

    def shard_of_person(self, person: str) -> int:
        """The shard holding every event of ``person`` (gateway/audit/shards.py)."""
        return shard_of_person(person, len(self.shards))

    def record(self, event: AuditEvent, event_id: str | None = None) -> Appended:
        """Append ``event`` to its shard (one round trip); when a checkpoint falls due, wake the
        checkpoint thread (or, without one, seal and sign right here).

        An append failure propagates: the caller must not release data it could not record.
        A checkpointing failure is logged, not raised — the event is already recorded, and
        ``verify`` and the stalled checkpoints will say what is wrong.
        """
        if self.continuity is not None and self.continuity.problem is not None:
            # Never append to (nor later sign) a log that does not continue the one we signed.
            raise ContinuityError(self.continuity.problem)
        shard = self.shards[shard_of_event(event, len(self.shards))]
        appended = shard.log.append_event(event, event_id)
        try:
            due = shard.checkpointer.due_after(appended.index)
        except redis.RedisError as error:  # the event is recorded: the request goes on
            log.warning("audit checkpoint check failed", extra={"reason": type(error).__name__})
            due = False
        if due:
            if self._thread is not None and self._thread.is_alive():
                self._wake.set()
            else:
                self._checkpoint()
        return appended

    def _checkpoint(self) -> None:
        if self.continuity is not None and self.continuity.problem is not None:
            return
        try:
            if self.combined is None:
                self._remember(self.shards[0], self.checkpointer.maybe_checkpoint())
            else:
                self._remember_round(self.combined.maybe_checkpoint())
        except (AuditError, redis.RedisError) as error:
            log.error("audit checkpoint failed", extra={"reason": str(error)})

    def move_to_cold_tier(self, max_chunks: int | None = 1) -> list[Moved]:
        """Move what may move to the cold tier (at most ``max_chunks`` per shard); the
        checkpoint thread calls it after signing, ``gateway audit tier`` on demand."""
        moved: list[Moved] = []
        for tiering in self.tiering:
            if tiering.due():
                moved.extend(tiering.move(max_chunks))
        return moved

    def _remember(self, shard: Shard, signed: SignedCheckpoint | None) -> None:
        if signed is not None and shard.continuity is not None:
            shard.continuity.remember(signed)

    def _remember_round(self, done: CheckpointRound | None) -> None:
        for shard, signed in zip(self.shards, done.shards if done else (), strict=False):
            self._remember(shard, signed)

    def prove(self, index: int, shard: int = 0) -> TlogProof:
        """A c2sp.org/tlog-proof for entry ``index`` of ``shard`` against its latest checkpoint
        (with several shards, one listed in the latest combined checkpoint: a round is signed
        first if the shard's latest checkpoint does not cover the entry)."""
        if not 0 <= shard < len(self.shards):
            raise AuditError(f"there is no audit shard {shard}")
        checkpointer = self.shards[shard].checkpointer
        latest = checkpointer.latest()
        if self.combined is not None and (latest is None or latest.checkpoint.size <= index):
            self._remember_round(self.combined.checkpoint())
        return prove_latest(checkpointer, index)

    def latest_note(self) -> LatestNote | None:
        """The latest checkpoint, or with several shards the latest combined checkpoint."""
        if self.combined is not None:
            combined = self.combined.latest()
            return LatestNote(combined.combined.total_size, combined.note, combined.signed_at_ms) \
                if combined else None
        latest = self.checkpointer.latest()
        return LatestNote(latest.checkpoint.size, latest.note, latest.signed_at_ms) if latest else None

    def verify(self) -> VerifyReport:
        """Every shard, and with several, every combined checkpoint over them."""
        return verify_audit([shard.log for shard in self.shards])

    def start_checkpointing(self, stop: threading.Event) -> threading.Thread:
        """Seal and sign in a daemon thread until ``stop`` is set: woken by :meth:`record` when
        a checkpoint falls due (so no request waits for sealing), and once a second for the
        time-based checkpoints of quiet periods."""
        def loop() -> None:
            while not stop.is_set():
                self._wake.wait(min(1.0, max(0.05, self.checkpointer.every_seconds / 4)))
                self._wake.clear()
                if not stop.is_set():
                    try:
                        self._checkpoint()
                        if self.continuity is None or self.continuity.problem is None:
                            self.move_to_cold_tier()
                    except Exception as error:  # a background thread only logs
                        log.error("audit checkpoint failed", extra={"reason": type(error).__name__},
                                  exc_info=error)

        self._thread = threading.Thread(target=loop, name="audit-checkpoints", daemon=True)
        self._thread.start()
        return self._thread
