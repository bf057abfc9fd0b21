"""Lost data is never accepted silently: the log's continuity, remembered outside Redis.

A Redis that restarts without its data (no persistence, a failed disk, a version that cannot
read the AOF) comes back empty, and everything built on it would carry on: people become
new people with new pseudonyms, old tokens die, and the audit key would sign a fresh log
that cannot be reconciled with the old one. So every gateway process remembers, in its data
directory (next to the archive), what it last saw signed:

- the *store id*, a random value written once into Redis (``{audit}:store-id``) when the
  gateway first met an empty store, and
- the latest checkpoint it signed: origin, size, root, and the signed note itself.

At start and then every few seconds it checks Redis against that: the same store id, a log
at least as long, and the same tree root at the remembered size (what a consistency proof
from the remembered checkpoint shows). On a mismatch the gateway refuses to serve (readiness
fails, every request 503) and says, in one log line, what was lost and the two ways out:
restore Redis from a backup (docs/operations.md, "Backup and restore"), or open a new log
epoch on the record with ``gateway audit new-epoch``, whose first checkpoint names the new
store and the old log's last size and root. Other hosts adopt the epoch from that signed
checkpoint (kept at ``{audit}:epoch``) when it continues the epoch they remember.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import redis

from gateway.audit.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from gateway.audit.checkpointer import SignedCheckpoint
from gateway.audit.combined import shards_signed
from gateway.audit.errors import AuditError

if TYPE_CHECKING:
    from gateway.audit.log import AuditLog
    from gateway.audit.note import NoteSigner

log = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 5.0
FILE_NAME = "continuity.json"


@dataclass(frozen=True, slots=True)
class Remembered:
    """What this data directory last saw of the store (continuity.json)."""

    store_id: str
    epoch: int
    size: int
    root: str  # base64, as in the checkpoint note
    note: str  # the signed checkpoint ("" before the first one)


class ContinuityError(AuditError):
    """Redis does not hold the data this gateway remembers: it refuses to serve."""


class ContinuityFile:
    """``<data_dir>/audit/continuity.json`` (``continuity-<shard>.json`` for shards > 0),
    written atomically, only ever moving forward."""

    def __init__(self, data_dir: Path, shard: int = 0) -> None:
        suffix = "" if shard == 0 else f"-{shard}"
        self.path = data_dir / "audit" / FILE_NAME.replace(".json", f"{suffix}.json")
        self.history = data_dir / "audit" / f"epochs{suffix}.jsonl"  # the epochs left behind

    def load(self) -> Remembered | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Remembered(str(data["store_id"]), int(data["epoch"]), int(data["size"]),
                              str(data["root"]), str(data["note"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ContinuityError(f"{self.path} is unreadable ({type(error).__name__}); "
                                  "restore it from the backup of the data directory") from None

    def save(self, remembered: Remembered, *, forward_only: bool = True) -> None:
        """Write ``remembered`` unless (with ``forward_only``) the file already holds a later
        checkpoint of the same store and epoch (another worker got there first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.load()
            if (forward_only and current is not None and current.store_id == remembered.store_id
                    and current.epoch == remembered.epoch and current.size >= remembered.size):
                return
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(asdict(remembered), indent=1), encoding="utf-8")
            os.replace(temporary, self.path)


class Continuity:
    """Compares Redis with the remembered state; one instance per process."""

    def __init__(self, audit_log: AuditLog, signer: NoteSigner, data_dir: Path, shards: int = 1) -> None:
        self.log = audit_log
        self.shards = shards  # the configured count: a log signed with another is refused
        self.signer = signer
        self.file = ContinuityFile(data_dir, audit_log.shard)
        self._key = audit_log.shard_keys.audit_store_id()
        self._lock = threading.Lock()
        self.problem: str | None = None  # why the gateway refuses to serve, if it does

    def _store_id(self) -> str | None:
        value = cast(bytes | None, self.log.store.redis.get(self._key))
        return value.decode() if value is not None else None

    def check(self) -> str | None:
        """Check Redis against the remembered state; returns (and keeps) the problem, if any.
        Redis being unreachable is not a problem of continuity: it raises."""
        with self._lock:
            self.log.forget_cached_state()
            self.problem = self._find_problem()
        if self.problem:
            log.critical("audit continuity broken: refusing to serve", extra={"reason": self.problem})
        return self.problem

    def _find_problem(self) -> str | None:
        signed = shards_signed(self.log) if self.log.shard == 0 else None
        if signed is not None and signed != self.shards:
            return (f"the audit log is signed as {signed} shards but GATEWAY_AUDIT_SHARDS={self.shards}: "
                    "people's events would go to other shards than their history; set it back")
        remembered = self.file.load()
        store_id = self._store_id()
        if remembered is None:
            # A new data directory: first start of a new deployment (empty Redis), or one
            # more host joining an existing one. Either way, start remembering now.
            if store_id is None:
                store_id = secrets.token_hex(16)
                if not self.log.store.redis.set(self._key, store_id, nx=True):
                    store_id = self._store_id() or store_id
            self.file.save(Remembered(store_id, 1, 0, base64.b64encode(self.log.root(0)).decode(), ""))
            return None
        way_out = ("restore Redis from its backup (docs/operations.md, \"Backup and restore\") or "
                   "run `gateway audit new-epoch` to continue on the record")
        if store_id is None:
            return (f"Redis has lost the gateway's data: the store id is gone and the log holds "
                    f"{self.log.size()} entries where {remembered.size} were signed "
                    f"(identities, consents, keys of people and the audit log); {way_out}")
        if store_id != remembered.store_id and self._adopt_epoch(remembered, store_id):
            return None
        if store_id != remembered.store_id:
            return (f"Redis holds another store (id {store_id[:8]}…, remembered {remembered.store_id[:8]}…); "
                    f"{way_out}")
        size = self.log.size()
        if size < remembered.size:
            return (f"the audit log in Redis has {size} entries but a checkpoint over {remembered.size} "
                    f"was signed: entries were lost; {way_out}")
        if remembered.size:
            try:
                root = base64.b64encode(self.log.root(remembered.size)).decode()
            except AuditError as error:
                return f"the audit log's first {remembered.size} entries do not verify ({error}); {way_out}"
            if root != remembered.root:
                return (f"the audit log's first {remembered.size} entries differ from the signed "
                        f"checkpoint (root {root[:12]}… instead of {remembered.root[:12]}…); {way_out}")
        return None

    def _adopt_epoch(self, remembered: Remembered, store_id: str) -> bool:
        """Another host opened a new epoch on the record: adopt it if its signed checkpoint
        names this store and continues from the epoch this data directory remembers."""
        raw = cast(bytes | None, self.log.store.redis.get(self.log.shard_keys.audit_epoch()))
        if raw is None:
            return False
        try:
            checkpoint = verify_checkpoint(raw.decode(), [self.signer.verifier], self.log.origin)
        except (AuditError, UnicodeDecodeError):
            return False
        lines = [line.split() for line in checkpoint.extensions]
        current = next((w for w in lines if len(w) == 3 and w[0] == "epoch"), None)
        previous = next((w for w in lines if len(w) == 4 and w[0] == "previous-epoch"), None)
        if current is None or current[2] != store_id or previous is None:
            return False
        if int(previous[1]) != remembered.epoch or int(previous[2]) < remembered.size:
            return False
        self.file.save(Remembered(store_id, int(current[1]), checkpoint.size,
                                  base64.b64encode(checkpoint.root).decode(), raw.decode()),
                       forward_only=False)
        log.warning("audit log epoch adopted", extra={"epoch": int(current[1])})
        return True

    def remember(self, signed: SignedCheckpoint) -> None:
        """Record a checkpoint this process signed (or saw signed) as the new floor."""
        current = self.file.load()
        if current is None or signed.checkpoint.size < current.size:
            return
        self.file.save(Remembered(current.store_id, current.epoch, signed.checkpoint.size,
                                  base64.b64encode(signed.checkpoint.root).decode(), signed.note))

    def start(self, stop: threading.Event, interval: float = CHECK_INTERVAL_SECONDS) -> threading.Thread:
        """Re-check every ``interval`` seconds (catches a Redis that restarted empty while the
        gateway ran) until ``stop`` is set."""
        return _watch(self, stop, interval)

    def new_epoch(self) -> Checkpoint:
        """Accept what Redis holds now as the continuation, on the record: a new store id, a
        new epoch, and a checkpoint of the current log whose extension line names the old
        epoch's last signed size and root. The caller records the audit event first."""
        previous = self.file.load()
        store_id = secrets.token_hex(16)
        self.log.store.redis.set(self._key, store_id)
        size = self.log.size()
        root = self.log.root(size)
        epoch = (previous.epoch if previous else 0) + 1
        extensions: tuple[str, ...] = (f"epoch {epoch} {store_id}",)
        if previous is not None:
            extensions += (f"previous-epoch {previous.epoch} {previous.size} {previous.root}",)
        checkpoint = Checkpoint(self.log.origin, size, root, extensions)
        note = sign_checkpoint(checkpoint, self.signer)
        signed = SignedCheckpoint(checkpoint, note, int(time.time() * 1000))
        keys = self.log.shard_keys
        # Older checkpoints of the lost history would contradict this one: only the new
        # epoch's checkpoints stay in Redis (the old note stays in continuity.json's history).
        self.log.store.redis.zremrangebyscore(keys.audit_checkpoints(), size, "+inf")
        self.log.store.redis.zadd(keys.audit_checkpoints(), {signed.to_json(): size})
        self.log.store.redis.set(keys.audit_epoch(), note)  # other hosts adopt the epoch from it
        self._archive_previous(previous)
        self.file.save(Remembered(store_id, epoch, size, base64.b64encode(root).decode(), note),
                       forward_only=False)
        with self._lock:
            self.problem = None
        return checkpoint

    def _archive_previous(self, previous: Remembered | None) -> None:
        if previous is None:
            return
        with open(self.file.history, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(previous)) + "\n")


class ShardedContinuity:
    """Continuity of every shard (each remembered in its own file): a shard whose Redis node
    came back empty, shorter or different stops the gateway as a lost unsharded log does."""

    def __init__(self, shards: list[Continuity]) -> None:
        self.shards = shards

    @property
    def problem(self) -> str | None:
        """The first shard's problem, naming the shard; ``None`` when every shard continues."""
        return next((f"audit shard {shard.log.shard}: {shard.problem}" for shard in self.shards
                     if shard.problem is not None), None)

    def check(self) -> str | None:
        for shard in self.shards:
            shard.check()
        return self.problem

    def start(self, stop: threading.Event, interval: float = CHECK_INTERVAL_SECONDS) -> threading.Thread:
        return _watch(self, stop, interval)


def _watch(continuity: Continuity | ShardedContinuity, stop: threading.Event,
           interval: float) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(interval):
            try:
                before = continuity.problem
                if continuity.check() is None and before is not None:
                    log.warning("audit continuity restored: serving again")
            except (redis.RedisError, AuditError) as error:
                log.warning("audit continuity not checked", extra={"reason": type(error).__name__})

    thread = threading.Thread(target=loop, name="audit-continuity", daemon=True)
    thread.start()
    return thread
