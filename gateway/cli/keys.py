"""``gateway keys …``: key-encryption keys and ID token signing keys."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from gateway.cli.main import main, one_line_errors
from gateway.config import Settings, load_settings

if TYPE_CHECKING:
    from gateway.vault import SigningKeyRing


@main.group()
def keys() -> None:
    """Keys in keys/: key-encryption keys (vault/kek.ring) and ID token signing keys."""


def _kek_ring(settings: Settings, create: bool = False) -> Any:
    from gateway.vault import KeyRing, load_key_ring, load_master_key

    master_key = settings.master_key.get_secret_value() if settings.master_key else None
    if create:
        master = load_master_key(master_key, settings.master_key_file)
        return KeyRing.init(settings.keys_dir, master, demo=settings.demo)
    return load_key_ring(settings.keys_dir, master_key=master_key,
                         master_key_file=settings.master_key_file, demo=settings.demo,
                         create_if_missing=settings.demo)


def sealer_for(settings: Settings) -> Any:
    """What seals the key files: the KEK ring (needs the master key outside demo mode)."""
    from gateway.vault.sealing import KekSealer

    return KekSealer(_kek_ring(settings))


def _signing_ring(settings: Settings, kek_ring: Any) -> SigningKeyRing:
    from gateway.vault import SigningKeyRing
    from gateway.vault.sealing import KekSealer

    return SigningKeyRing(settings.keys_dir, KekSealer(kek_ring)).load_or_create()


@keys.command("init")
@one_line_errors
def keys_init() -> None:
    """Create the key-encryption key ring, sealed under the master key."""
    ring = _kek_ring(load_settings(), create=True)
    sealed = "sealed under the master key" if ring.sealed else "NOT sealed (demo only)"
    click.echo(f"key ring created, {sealed}: {ring.entries()[0].kek_id} primary")


@keys.command("list")
@one_line_errors
def keys_list() -> None:
    """Show the key-encryption keys and the signing keys, with their states."""

    settings = load_settings()
    ring = _kek_ring(settings)
    click.echo(f"key-encryption keys ({'sealed' if ring.sealed else 'NOT sealed: demo only'}):")
    for info in ring.entries():
        click.echo(f"  {info.kek_id}  {info.state.value}  created {info.created}")
    click.echo("signing keys:")
    for entry in _signing_ring(settings, ring).entries():
        until = f" until {entry.retire_after}" if entry.retire_after else ""
        click.echo(f"  {entry.kid}  {entry.alg}  {entry.state}{until}")


@keys.command("rotate")
@click.option("--signing", "signing_alg", type=click.Choice(["ES256", "RS256"]), default=None,
              help="Rotate the ID token signing key of this algorithm instead of the KEK.")
@one_line_errors
def keys_rotate(signing_alg: str | None) -> None:
    """Make a new primary key-encryption key (or, with --signing, signing key)."""

    settings = load_settings()
    if signing_alg:
        ring = _signing_ring(settings, _kek_ring(settings))
        # The old key stays in the JWKS as long as an ID token it signed can live.
        entry = ring.rotate(signing_alg, overlap_seconds=settings.id_token_ttl)  # type: ignore[arg-type]
        _record_key_event(settings, "signing")
        click.echo(f"new primary {entry.alg} signing key {entry.kid}")
        return
    info = _kek_ring(settings).rotate()
    _record_key_event(settings, "key-encryption")
    click.echo(f"new primary key-encryption key {info.kek_id}; run `gateway keys rewrap` next")


@keys.command("rewrap")
@one_line_errors
def keys_rewrap() -> None:
    """Re-wrap every person's data key under the primary KEK (resumable)."""
    from gateway.audit.keyfile import reseal_audit_key
    from gateway.store import open_store
    from gateway.vault import DataKeyStore, rewrap_data_keys
    from gateway.vault.sealing import KekSealer
    from gateway.vault.secrets import reseal_secrets

    settings = load_settings()
    store = open_store(settings)
    try:
        kek_ring = _kek_ring(settings)
        resealed = _signing_ring(settings, kek_ring).reseal()
        resealed += reseal_secrets(settings.keys_dir, KekSealer(kek_ring))
        resealed += reseal_audit_key(settings.keys_dir, KekSealer(kek_ring))
        click.echo(f"re-sealed {resealed} key files under the primary key-encryption key")
        data_keys = DataKeyStore(store, kek_ring)
        with click.progressbar(length=max(data_keys.count(), 1), label="rewrapping") as bar:
            seen = 0

            def advance(progress: Any) -> None:
                nonlocal seen
                bar.update(progress.scanned - seen)
                seen = progress.scanned

            result = rewrap_data_keys(data_keys, on_progress=advance)
    finally:
        store.close()
    click.echo(f"rewrapped {result.rewrapped}, already current {result.unchanged}, failed {result.failed}")
    if result.failed:
        sys.exit(1)


@keys.command("retire")
@click.argument("kek_id")
@click.option("--grace", default=10.0, show_default=True,
              help="Seconds a demoted key must wait, so every process has seen the rotation.")
@one_line_errors
def keys_retire(kek_id: str, grace: float) -> None:
    """Destroy a former key-encryption key once no data key is wrapped under it."""
    from gateway.audit.keyfile import audit_key_sealed_under
    from gateway.store import open_store
    from gateway.vault import DataKeyStore
    from gateway.vault.secrets import count_secrets_sealed_under

    settings = load_settings()
    store = open_store(settings)
    try:
        ring = _kek_ring(settings)
        data_keys = DataKeyStore(store, ring)
        signing = _signing_ring(settings, ring)

        def still_wrapped(kek: str) -> int:
            return (data_keys.count_wrapped_under(kek) + signing.count_sealed_under(kek)
                    + count_secrets_sealed_under(settings.keys_dir, kek)
                    + audit_key_sealed_under(settings.keys_dir, kek))

        ring.retire(kek_id, still_wrapped, grace_seconds=grace)
    finally:
        store.close()
    _record_key_event(settings, "key-encryption-retired")
    click.echo(f"key-encryption key {kek_id} retired: its material is destroyed")


def _record_key_event(settings: Settings, what: str) -> None:
    """Key operations are audit events too (actor: the operator at the command line)."""
    from gateway.audit import AuditEvent, AuditService
    from gateway.store import open_store

    store = open_store(settings)
    try:
        audit = AuditService(store, settings.keys_dir, settings.audit_log_origin,
                             sealer=sealer_for(settings), shards=settings.audit_shards,
                             cold_dir=settings.audit_cold_dir)
        audit.record(AuditEvent(actor_type="staff", actor_id="cli", action="key_rotated",
                                purpose=what))
    finally:
        store.close()


