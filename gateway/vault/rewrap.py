"""Re-wrapping every data key under the current primary key-encryption key.

After ``KeyRing.rotate`` new data keys are wrapped under the new primary, but existing
ones still name the old key, which therefore cannot be retired. ``rewrap_data_keys``
walks all wrapped data keys with SCAN and re-wraps those under any other key. Only the
69-byte wrapped keys change: sealed fields are untouched, because the data keys inside
stay the same.

- **Resumable**: after each batch the SCAN cursor and the counters are saved in the hash
  ``vault:rewrap``; a run that finds a record for the same target key continues from
  its cursor. A record for another target (the ring was rotated again) is discarded and
  the walk restarts. The record is deleted when the walk completes.
- **Idempotent**: a key already under the primary is left alone; each replacement is a
  compare-and-set, so an erasure or a new sign-in racing with the walk always wins.
- **Complete enough to retire**: SCAN returns every key that exists for the whole walk
  at least once. A key created meanwhile is created under the primary, except by a
  process that has not yet seen the rotation; ``KeyRing.retire`` counts again before it
  erases anything, and refuses while any data key still needs the old key.

One walk at a time: two concurrent walks are safe (compare-and-set) but share one
progress record, so their counters mean little.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import cast

from redis.typing import EncodableT, FieldT

from gateway.store import Store
from gateway.vault.datakeys import SCAN_BATCH, DataKeyStore, parse_header, unwrap, wrap
from gateway.vault.errors import VaultError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RewrapProgress:
    """Where a rewrap stands; ``total`` is the count of data keys when the walk began."""

    target_kek: str
    total: int
    scanned: int = 0
    rewrapped: int = 0
    unchanged: int = 0
    failed: int = 0
    cursor: int = 0
    resumed: bool = False
    done: bool = False


_COUNTERS = ("total", "scanned", "rewrapped", "unchanged", "failed", "cursor")


def _load(store: Store, target: str) -> RewrapProgress | None:
    raw = cast(dict[bytes, bytes], store.redis.hgetall(store.keys.vault_rewrap_progress()))
    if not raw or raw.get(b"target", b"").decode() != target:
        return None
    try:
        values = [int(raw[name.encode()]) for name in _COUNTERS]
    except (KeyError, ValueError):
        return None  # a damaged record: start over, which is always safe
    total, scanned, rewrapped, unchanged, failed, cursor = values
    return RewrapProgress(target_kek=target, total=total, scanned=scanned, rewrapped=rewrapped,
                          unchanged=unchanged, failed=failed, cursor=cursor, resumed=True)


def _save(store: Store, progress: RewrapProgress) -> None:
    mapping: dict[FieldT, EncodableT] = {"target": progress.target_kek}
    mapping.update({name: int(getattr(progress, name)) for name in _COUNTERS})
    store.redis.hset(store.keys.vault_rewrap_progress(), mapping=mapping)


def rewrap_data_keys(data_keys: DataKeyStore, *,
                     on_progress: Callable[[RewrapProgress], None] | None = None,
                     batch_size: int = SCAN_BATCH) -> RewrapProgress:
    """Re-wrap every data key under the primary KEK, resuming an interrupted walk.

    ``on_progress`` is called after each batch has been saved (an exception it raises
    stops the walk at a point from which the next call resumes) and once at the end.
    """
    ring = data_keys.ring
    store = data_keys.store
    target_id, _ = ring.primary()
    target = f"{target_id:08x}"
    progress = _load(store, target)
    if progress is None:
        store.redis.delete(store.keys.vault_rewrap_progress())
        progress = RewrapProgress(target_kek=target, total=data_keys.count())
        _save(store, progress)
    else:
        log.info("rewrap resumed", extra={"target_kek": target, "scanned": progress.scanned})
    while True:
        cursor, found = data_keys.scan(progress.cursor, batch_size)
        changes: list[tuple[str, bytes, bytes]] = []
        unchanged = failed = 0
        for redis_key, wrapped in found.items():
            person_id = store.keys.vault_data_key_person(redis_key)
            try:
                if person_id is None:
                    raise VaultError("not a data key name")
                if parse_header(wrapped).kek_id == target_id:
                    unchanged += 1
                    continue
                header, material = unwrap(ring, person_id, wrapped)
                changes.append((redis_key, wrapped, wrap(ring, person_id, header.data_key_id, material)))
            except VaultError as error:
                failed += 1
                log.warning("data key not rewrapped", extra={"reason": type(error).__name__})
        replaced = data_keys.replace_if_unchanged(changes)
        progress = replace(
            progress, cursor=cursor, scanned=progress.scanned + len(found),
            rewrapped=progress.rewrapped + replaced,
            # a key that changed under us was erased or re-created: nothing left to do
            unchanged=progress.unchanged + unchanged + len(changes) - replaced,
            failed=progress.failed + failed, done=cursor == 0,
        )
        if progress.done:
            store.redis.delete(store.keys.vault_rewrap_progress())
            log.info("rewrap finished", extra={"target_kek": target, "rewrapped": progress.rewrapped,
                                               "failed": progress.failed})
        else:
            _save(store, progress)
        if on_progress is not None:
            on_progress(progress)
        if progress.done:
            return progress
