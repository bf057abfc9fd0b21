"""The one object the rest of the gateway holds: append, checkpoint, query, prove, verify.

Call sites (OIDC flows, consent, staff API, CLI) build an :class:`AuditEvent` and call
:meth:`AuditService.record`; they never touch Redis keys or the tree.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from gateway.audit.checkpointer import Checkpointer
from gateway.audit.continuity import Continuity, ContinuityError
from gateway.audit.errors import AuditError
from gateway.audit.events import AuditEvent
from gateway.audit.keyfile import load_audit_keys
from gateway.audit.log import Appended, AuditLog
from gateway.audit.proofs import TlogProof, prove_latest
from gateway.audit.query import AuditQuery
from gateway.audit.verify import VerifyReport, verify_log

if TYPE_CHECKING:
    from gateway.store import Store
    from gateway.vault.sealing import KekSealer

log = logging.getLogger(__name__)


class AuditService:
    def __init__(self, store: Store, keys_dir: Path, origin: str, every_events: int = 1000,
                 every_seconds: float = 60.0, sealer: KekSealer | None = None,
                 data_dir: Path | None = None) -> None:
        self.keys = load_audit_keys(keys_dir, origin, sealer)
        self.log = AuditLog(store, self.keys)
        self.checkpointer = Checkpointer(self.log, self.keys.signer, every_events, every_seconds)
        # Only a serving gateway remembers what it signed; CLI commands open the log without.
        self.continuity = Continuity(self.log, self.keys.signer, data_dir) if data_dir else None
        self.query = AuditQuery(self.log)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def verifier_key(self) -> str:
        """The published key (``<origin>+<id>+<base64>``) anyone checks checkpoints and proofs with."""
        return self.keys.signer.verifier.to_string()

    def record(self, event: AuditEvent, event_id: str | None = None) -> Appended:
        """Append ``event`` (one round trip); when a checkpoint falls due, wake the checkpoint
        thread (or, without one, seal and sign right here).

        An append failure propagates: the caller must not release data it could not record.
        A checkpointing failure is logged, not raised — the event is already recorded, and
        ``verify`` and the stalled checkpoints will say what is wrong.
        """
        if self.continuity is not None and self.continuity.problem is not None:
            # Never append to (nor later sign) a log that does not continue the one we signed.
            raise ContinuityError(self.continuity.problem)
        appended = self.log.append_event(event, event_id)
        try:
            due = self.checkpointer.due_after(appended.index)
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
            signed = self.checkpointer.maybe_checkpoint()
            if signed is not None and self.continuity is not None:
                self.continuity.remember(signed)
        except (AuditError, redis.RedisError) as error:
            log.error("audit checkpoint failed", extra={"reason": str(error)})

    def prove(self, index: int) -> TlogProof:
        """A c2sp.org/tlog-proof for entry ``index`` against the latest checkpoint."""
        return prove_latest(self.checkpointer, index)

    def verify(self) -> VerifyReport:
        return verify_log(self.log)

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
                    except Exception as error:  # a background thread only logs
                        log.error("audit checkpoint failed", extra={"reason": type(error).__name__},
                                  exc_info=error)

        self._thread = threading.Thread(target=loop, name="audit-checkpoints", daemon=True)
        self._thread.start()
        return self._thread
