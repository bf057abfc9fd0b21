"""The ring of key-encryption keys (KEKs) that wrap every person's data key.

Ideas taken from Tink's keysets: each key has a short random id (4 bytes) written as the
prefix of everything it wraps, and exactly one key is *primary*. States:

- ``primary`` wraps new data keys;
- ``active`` only unwraps (a former primary, until ``rewrap`` has moved its data keys);
- ``retired`` has its material erased from the ring; the id stays on record so that data
  still naming it fails with :class:`RetiredKeyError` instead of "unknown key".

Retiring is refused while any data key is still wrapped under the key (the caller passes
a counter, :meth:`gateway.vault.datakeys.DataKeyStore.count_wrapped_under`), and while
the key was demoted too recently for every process to have noticed the rotation.

The ring is one file, ``keys/vault/kek.ring`` (format in :mod:`gateway.vault.ringfile`),
sealed with AES-256-GCM under the master key. Changes take an exclusive ``flock`` on a lock
file beside it and re-read the file first, so two operators cannot lose each other's
rotation. Serving processes notice a change made by another process the next time they
wrap (the file's identity is checked at most once a second) or at once when they meet an
unknown key id.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.vault.errors import (
    KeyRingExistsError,
    KeyRingMissingError,
    KeyRingTamperedError,
    KeyStateError,
    MasterKeyMissingError,
    RetiredKeyError,
    UnknownKeyError,
)
from gateway.vault.files import write_private_file
from gateway.vault.masterkey import ENV_FILE_NAME, ENV_VALUE_NAME, MasterKey, load_master_key
from gateway.vault.ringfile import (
    KEK_BYTES,
    KekEntry,
    KekState,
    decode_ring,
    encode_ring,
    new_kek_id,
)

log = logging.getLogger(__name__)

RING_DIRECTORY = "vault"
RING_FILE = "kek.ring"
_LOCK_FILE = ".kek.lock"
_RELOAD_CHECK_SECONDS = 1.0
# Ten reload intervals: every serving process has seen a rotation before its old primary
# can be retired, so nobody wraps a new data key under a key about to lose its material.
DEFAULT_RETIRE_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class KekInfo:
    """What may be shown about a key-encryption key: never its material."""

    kek_id: str
    state: KekState
    created: int
    demoted: int | None
    retired: int | None


def _info(entry: KekEntry) -> KekInfo:
    return KekInfo(entry.hex_id, entry.state, entry.created, entry.demoted, entry.retired)


def _parse_id(kek_id: str) -> int:
    try:
        value = int(kek_id, 16)
    except ValueError:
        raise UnknownKeyError(f"unknown key-encryption key id {kek_id!r}") from None
    if len(kek_id) != 8 or value < 0:
        raise UnknownKeyError(f"unknown key-encryption key id {kek_id!r}")
    return value


class KeyRing:
    """Loaded key-encryption keys; build it with :meth:`init` or :meth:`load`."""

    def __init__(self, path: Path, master: MasterKey | None, *, demo: bool) -> None:
        self._path = path
        self._master = master
        self._demo = demo
        self._lock = threading.Lock()
        self._entries: dict[int, KekEntry] = {}
        self._primary: KekEntry | None = None
        self._sealed = False
        self._identity: tuple[int, int] = (0, 0)
        self._checked_at = 0.0

    @staticmethod
    def path_in(keys_dir: Path) -> Path:
        return keys_dir / RING_DIRECTORY / RING_FILE

    # -- creating and loading ----------------------------------------------------------

    @classmethod
    def init(cls, keys_dir: Path, master: MasterKey | None, *, demo: bool = False) -> KeyRing:
        """Create a ring with one fresh primary key; refuse if a ring exists already.

        Without a master key the ring is written unsealed, which only ``demo`` allows.
        """
        ring = cls(cls.path_in(keys_dir), master, demo=demo)
        ring._require_master_or_demo()
        with ring._exclusive():
            if ring._path.exists():
                raise KeyRingExistsError(f"key ring {ring._path} exists already; refusing to replace it")
            ring._write([ring._new_primary([])])
        ring._reload()
        ring._warn_if_unsealed()
        return ring

    @classmethod
    def load(cls, keys_dir: Path, master: MasterKey | None, *, demo: bool = False) -> KeyRing:
        """Read and check the ring; a development (unsealed) ring loads only in demo mode
        and is reported by :attr:`sealed` and a warning in the log."""
        ring = cls(cls.path_in(keys_dir), master, demo=demo)
        if not ring._path.exists():
            raise KeyRingMissingError(f"no key ring at {ring._path}: run `gateway keys init`")
        ring._require_master_or_demo()
        ring._reload()
        ring._warn_if_unsealed()
        return ring

    def _require_master_or_demo(self) -> None:
        if self._master is None and not self._demo:
            raise MasterKeyMissingError(
                f"no master key: set {ENV_VALUE_NAME} or {ENV_FILE_NAME} (unsealed rings are demo-only)"
            )

    def _read(self) -> list[KekEntry]:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            raise KeyRingMissingError(f"no key ring at {self._path}: run `gateway keys init`") from None
        except OSError as error:
            raise KeyRingTamperedError(f"cannot read key ring {self._path}: {error.strerror}") from None
        entries, sealed = decode_ring(data, self._master, demo=self._demo, path=self._path)
        self._sealed = sealed
        return entries

    def _reload(self) -> None:
        with self._lock:
            stat = self._path.stat()
            entries = self._read()
            self._install(entries, (stat.st_ino, stat.st_mtime_ns))

    def _warn_if_unsealed(self) -> None:
        if not self._sealed:
            log.warning("development key ring, not sealed", extra={"path": str(self._path)})

    def _install(self, entries: list[KekEntry], identity: tuple[int, int]) -> None:
        self._entries = {e.kek_id: e for e in entries}
        self._primary = next(e for e in entries if e.state is KekState.PRIMARY)
        self._identity = identity
        self._checked_at = time.monotonic()

    def _refresh(self, force: bool = False) -> None:
        """Reload when another process replaced the file (checked at most once a second)."""
        now = time.monotonic()
        if not force and now - self._checked_at < _RELOAD_CHECK_SECONDS:
            return
        self._checked_at = now
        try:
            stat = self._path.stat()
        except OSError:
            return  # keep the keys we hold; the operator sees the error from the CLI
        if (stat.st_ino, stat.st_mtime_ns) != self._identity:
            self._reload()

    # -- use ---------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        """False for a development ring: the file is readable by anyone who can read it."""
        return self._sealed

    def entries(self) -> list[KekInfo]:
        """Every key of the ring, oldest first, without material (``gateway keys list``)."""
        self._refresh()
        return sorted((_info(e) for e in self._entries.values()), key=lambda i: i.created)

    def primary(self) -> tuple[int, bytes]:
        """The primary key's id and material, for wrapping new data keys."""
        self._refresh()
        primary = self._primary
        if primary is None or primary.material is None:  # _install guarantees both
            raise KeyRingMissingError(f"key ring {self._path} is not loaded")
        return primary.kek_id, primary.material

    def material(self, kek_id: int) -> bytes:
        """The material of key ``kek_id``, for unwrapping; reloads once before giving up."""
        entry = self._entries.get(kek_id)
        if entry is None:
            self._refresh(force=True)
            entry = self._entries.get(kek_id)
        if entry is None:
            raise UnknownKeyError(f"unknown key-encryption key id {kek_id:08x}")
        if entry.material is None:
            raise RetiredKeyError(f"key-encryption key {entry.hex_id} is retired; its material is gone")
        return entry.material

    # -- operator actions --------------------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        lock_path = self._path.with_name(_LOCK_FILE)
        lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)

    def _write(self, entries: list[KekEntry]) -> None:
        write_private_file(self._path, encode_ring(entries, self._master))

    @staticmethod
    def _new_primary(entries: list[KekEntry]) -> KekEntry:
        return KekEntry(
            kek_id=new_kek_id({e.kek_id for e in entries}), state=KekState.PRIMARY,
            created=int(time.time()), material=secrets.token_bytes(KEK_BYTES),
        )

    def rotate(self) -> KekInfo:
        """Make a fresh primary key; the former primary becomes ``active`` (it still
        unwraps). Run :func:`gateway.vault.rewrap.rewrap_data_keys` afterwards."""
        with self._exclusive():
            entries = self._read()
            now = int(time.time())
            entries = [
                replace(e, state=KekState.ACTIVE, demoted=now) if e.state is KekState.PRIMARY else e
                for e in entries
            ]
            new = self._new_primary(entries)
            self._write([*entries, new])
        self._reload()
        return _info(new)

    def retire(self, kek_id: str, wrapped_count: Callable[[str], int], *,
               grace_seconds: float = DEFAULT_RETIRE_GRACE_SECONDS) -> KekInfo:
        """Erase the material of an ``active`` key that no data key needs any more.

        ``wrapped_count(kek_id)`` must count the data keys still wrapped under it; any
        count above zero refuses (run rewrap first). The primary cannot be retired.
        """
        wanted = _parse_id(kek_id)
        with self._exclusive():
            entries = self._read()
            entry = next((e for e in entries if e.kek_id == wanted), None)
            if entry is None:
                raise UnknownKeyError(f"unknown key-encryption key id {kek_id}")
            if entry.state is KekState.PRIMARY:
                raise KeyStateError(f"key {kek_id} is the primary key: rotate before retiring it")
            if entry.state is KekState.RETIRED:
                return _info(entry)
            if time.time() - (entry.demoted or 0) < grace_seconds:
                raise KeyStateError(
                    f"key {kek_id} stopped being primary less than {grace_seconds:g} s ago; retry later"
                )
            remaining = wrapped_count(entry.hex_id)
            if remaining:
                raise KeyStateError(f"key {kek_id} still wraps {remaining} data keys: run rewrap first")
            retired = replace(entry, state=KekState.RETIRED, retired=int(time.time()), material=None)
            self._write([retired if e.kek_id == wanted else e for e in entries])
        self._reload()
        return _info(retired)

    def change_master_key(self, new_master: MasterKey | None) -> None:
        """Seal the same keys under another master key (or, in demo mode only, unseal).

        Used to rotate the master key, or to seal a development ring for production.
        """
        if new_master is None and not self._demo:
            raise MasterKeyMissingError("an unsealed key ring is allowed in demo mode only")
        with self._exclusive():
            entries = self._read()
            self._master = new_master
            self._write(entries)
        self._reload()


def load_key_ring(keys_dir: Path, *, master_key: str | None, master_key_file: Path | None,
                  demo: bool, create_if_missing: bool = False) -> KeyRing:
    """Open the ring in ``keys_dir`` with the master key from ``master_key`` (the value of
    ``GATEWAY_MASTER_KEY``) or ``master_key_file``.

    ``create_if_missing`` should be true only in demo mode: in production a missing ring
    most likely means ``keys/`` was not mounted, and a fresh ring would silently make
    every stored profile unreadable; ``gateway keys init`` creates it deliberately.
    """
    master = load_master_key(master_key, master_key_file)
    if create_if_missing and not KeyRing.path_in(keys_dir).exists():
        try:
            return KeyRing.init(keys_dir, master, demo=demo)
        except KeyRingExistsError:
            pass  # another process created it in the meantime
    return KeyRing.load(keys_dir, master, demo=demo)
