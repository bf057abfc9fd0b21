"""``gateway audit …`` and ``gateway staff …``: the audit log and compliance staff."""

from __future__ import annotations

import sys
from typing import Any

import click

from gateway.cli.keys import sealer_for
from gateway.cli.main import main, one_line_errors
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError


@main.group()
def audit() -> None:
    """The audit log: verify it, export it, show its public key."""


def _audit_service(settings: Settings) -> tuple[Any, Any]:
    from gateway.audit import AuditService
    from gateway.store import open_store

    store = open_store(settings)
    return store, AuditService(store, settings.keys_dir, settings.audit_log_origin,
                               sealer=sealer_for(settings), shards=settings.audit_shards,
                               cold_dir=settings.audit_cold_dir, hot_entries=settings.audit_hot_entries)


def _shard(service: Any, shard: int) -> Any:
    """One shard of the log (``--shard``), refused when there is no such shard."""
    if not 0 <= shard < len(service.shards):
        raise ConfigError(f"--shard must be between 0 and {len(service.shards) - 1} (GATEWAY_AUDIT_SHARDS)")
    return service.shards[shard]


def _verification_lines(shard: Any) -> Any:
    """One shard's whole log; once entries were archived, the live segment from the boundary
    to the latest checkpoint (archive format: it verifies on its own, like the archive files)."""
    from gateway.audit import export_log
    from gateway.audit.archive import Archiver
    from gateway.audit.boundary import archived_size

    start = archived_size(shard.log)
    if start == 0:
        return export_log(shard.log)
    archiver = Archiver(shard.log, shard.checkpointer)
    _, stop = archiver.segment(shard.log.size())
    return archiver.lines(start, stop)


@audit.command("key")
@one_line_errors
def audit_key() -> None:
    """Print the verifier key that checks the log's checkpoints and proofs (publish it)."""
    from gateway.audit.keyfile import load_audit_keys

    settings = load_settings()
    keys = load_audit_keys(settings.keys_dir, settings.audit_log_origin, sealer_for(settings))
    click.echo(keys.signer.verifier.to_string())


@audit.command("verify")
@click.option("--export", "export_files", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="Check an export file offline instead of the live log; every shard's export, "
                   "in shard order, to check them together with the combined checkpoints.")
@click.option("--key", "keys", multiple=True, help="Trusted verifier key(s) for --export.")
@click.option("--shard", "shard", type=click.IntRange(min=0), default=0, show_default=True,
              help="The shard a single --export file was written from (its checkpoints' origin).")
@one_line_errors
def audit_verify(export_files: tuple[str, ...], keys: tuple[str, ...], shard: int) -> None:
    """Check the chain, the tree and every checkpoint signature (every shard's, and the
    combined checkpoints over them); name the first bad index."""
    from gateway.audit import NoteVerifier

    settings = load_settings()
    if export_files:
        if not keys:
            raise ConfigError("--export needs at least one --key (the log's published verifier key)")
        verifiers = [NoteVerifier.from_string(key) for key in keys]
        if len(export_files) == 1:
            report = _verify_file(export_files[0], verifiers, shard)
        else:
            report = _verify_shard_files(export_files, verifiers)
    else:
        store, service = _audit_service(settings)
        try:
            report = service.verify()
        finally:
            store.close()
    if report.mismatch is not None:
        # Another issuer or keys directory than the log was written with: say which, not "FAILED".
        raise ConfigError(_mismatch_line(report.mismatch, settings, offline=bool(export_files)))
    if report.problem is not None:
        where = f"index {report.problem.index}" if report.problem.index is not None else "log"
        if report.problem.shard is not None:
            where = f"shard {report.problem.shard} {where}"
        click.echo(f"FAILED at {where}: {report.problem.reason}")
        sys.exit(1)
    shards = f" in {len(report.shards)} shards" if report.shards else ""
    click.echo(f"ok: {report.size} events{shards}, {report.checkpoints_checked} checkpoints verified, "
               f"latest checkpoint covers {report.latest_checkpoint}, {report.unsigned_tail} not yet signed")


def _mismatch_line(mismatch: Any, settings: Settings, offline: bool) -> str:
    """One line naming the setting that differs, the value in the log and the configured one."""
    advice = "this is no sign of tampering; run verify with the settings the log was written with"
    if offline:
        source = "--key"
    elif mismatch.setting == "origin":
        source = f"GATEWAY_AUDIT_ORIGIN, by default the host of GATEWAY_ISSUER={settings.issuer}"
    elif mismatch.setting == "shards":
        source = "GATEWAY_AUDIT_SHARDS"
    else:
        source = f"the audit key in GATEWAY_KEYS_DIR={settings.keys_dir}"
    if mismatch.setting == "origin":
        what = f"the log's checkpoints are for origin {mismatch.found!r}, configured: {mismatch.configured!r}"
    elif mismatch.setting == "key":
        what = f"the log's checkpoints are signed by key {mismatch.found}, configured: {mismatch.configured}"
    elif mismatch.setting == "shards":
        what = f"the log's combined checkpoints list {mismatch.found} shards, configured: " \
               f"{mismatch.configured}"
    else:
        what = f"no entry's MAC verifies with the configured audit key {mismatch.configured}"
    return f"settings mismatch: {what} ({source}); {advice}"


def _verify_file(path: str, verifiers: list[Any], shard: int) -> Any:
    """A whole-log export or an archive segment, told apart by the header's format."""
    import json

    from gateway.audit import verify_export
    from gateway.audit.archive import ARCHIVE_FORMAT, verify_archive
    from gateway.audit.errors import AuditError
    from gateway.audit.shards import shard_origin

    with open(path, encoding="utf-8") as lines:
        first = lines.readline()
        try:
            header = json.loads(first)
        except ValueError:
            raise ConfigError(f"{path} is not an audit export or archive") from None
        rest = [first, *lines]
    try:
        if isinstance(header, dict) and header.get("format") == ARCHIVE_FORMAT:
            return verify_archive(rest, verifiers)
        return verify_export(rest, verifiers, shard_origin(verifiers[0].name, shard))
    except AuditError as error:
        raise ConfigError(f"{path}: {error}") from None


def _verify_shard_files(paths: tuple[str, ...], verifiers: list[Any]) -> Any:
    """The exports of every shard, shard 0's first (it carries the combined checkpoints)."""
    from collections.abc import Iterator

    from gateway.audit.errors import AuditError
    from gateway.audit.verify import verify_shard_exports

    def lines(shard: int) -> Iterator[str]:
        with open(paths[shard], encoding="utf-8") as handle:
            yield from handle

    try:
        return verify_shard_exports(lines, len(paths), verifiers, verifiers[0].name)
    except AuditError as error:
        raise ConfigError(f"{error} (give every shard's export with --export, shard 0 first)") from None


@audit.command("archive")
@click.option("--output", "output", type=click.Path(dir_okay=False), required=True)
@click.option("--before", "before", type=int, default=None,
              help="Archive entries below this index (rounded down to a signed checkpoint).")
@click.option("--older-than-days", "days", type=int, default=None,
              help="Archive entries older than this many days (instead of --before).")
@click.option("--shard", "shard_number", type=click.IntRange(min=0), default=0, show_default=True,
              help="The shard to archive (each shard is archived on its own).")
@one_line_errors
def audit_archive(output: str, before: int | None, days: int | None, shard_number: int) -> None:
    """Move old entries of one shard to a file that verifies on its own; proofs keep working."""
    import os
    import time as _time

    from gateway.audit import NoteVerifier
    from gateway.audit.archive import Archiver, verify_archive
    from gateway.audit.errors import AuditError

    if (before is None) == (days is None):
        raise ConfigError("give exactly one of --before or --older-than-days")
    settings = load_settings()
    store, service = _audit_service(settings)
    try:
        shard = _shard(service, shard_number)
        if days is not None:
            cutoff = _time.strftime("%Y%m%d%H", _time.gmtime(_time.time() - days * 86400))
            hours = store.redis.hgetall(shard.log.shard_keys.audit_hours())
            lasts = [int(v) for k, v in hours.items()
                     if k.decode().endswith(":last") and k.decode().split(":")[0] < cutoff]
            before = max(lasts, default=-1) + 1
        archiver = Archiver(shard.log, shard.checkpointer)
        try:
            start, stop = archiver.segment(before or 0)
            with open(output, "w", encoding="utf-8") as out:
                for line in archiver.lines(start, stop):
                    out.write(line)
                out.flush()
                os.fsync(out.fileno())
            with open(output, encoding="utf-8") as written:  # check the file before dropping
                report = verify_archive(written, [NoteVerifier.from_string(service.verifier_key)])
        except AuditError as error:
            raise ConfigError(str(error)) from None
        if report.problem is not None:
            raise ConfigError(f"the archive did not verify ({report.problem.reason}); nothing removed")
        archiver.drop(start, stop)
    finally:
        store.close()
    where = f" of shard {shard_number}" if len(service.shards) > 1 else ""
    kept = ("the cold tier keeps them, queryable" if shard.log.cold is not None
            else "Redis keeps their tree hashes")
    click.echo(f"archived entries [{start}, {stop}){where} to {output}; {kept}")


@audit.command("tier")
@one_line_errors
def audit_tier() -> None:
    """Move every signed chunk beyond GATEWAY_AUDIT_HOT_ENTRIES to the cold tier now (a serving
    gateway does this by itself, a chunk at a time, after signing)."""
    from gateway.audit.errors import AuditError

    settings = load_settings()
    if settings.audit_cold_dir is None:
        raise ConfigError("GATEWAY_AUDIT_COLD_DIR is not set: the whole log stays in Redis")
    store, service = _audit_service(settings)
    try:
        moved = service.move_to_cold_tier(max_chunks=None)
    except AuditError as error:
        raise ConfigError(str(error)) from None
    finally:
        store.close()
    for chunk in moved:
        where = f" of shard {chunk.shard}" if len(service.shards) > 1 else ""
        click.echo(f"moved entries [{chunk.start}, {chunk.stop}){where} to {settings.audit_cold_dir}")
    if not moved:
        click.echo("nothing to move: every chunk beyond the hot entries is already cold, or not yet signed")


@audit.command("export")
@click.option("--output", "output", type=click.Path(dir_okay=False), required=True)
@click.option("--format", "fmt", type=click.Choice(["verify", "jsonl", "csv"]), default="verify",
              show_default=True, help="verify: the whole log for offline checking; jsonl/csv: events.")
@click.option("--person", default=None)
@click.option("--shop", default=None)
@click.option("--action", default=None)
@click.option("--field", default=None)
@click.option("--since", default=None)
@click.option("--until", default=None)
@click.option("--shard", "shard_number", type=click.IntRange(min=0), default=0, show_default=True,
              help="--format verify: the shard to export (each verifies on its own).")
@one_line_errors
def audit_export(output: str, fmt: str, shard_number: int, **filters: str | None) -> None:
    """Write the log (or a filtered list of events of every shard) to a file, streamed."""
    from gateway.audit import AuditEvent, export_csv, export_jsonl
    from gateway.web.audit_api import parse_filter

    settings = load_settings()
    try:
        flt = parse_filter({k: v for k, v in filters.items() if v})
    except ValueError as error:
        raise ConfigError(f"invalid filter: {error}") from None
    store, service = _audit_service(settings)
    try:
        service.record(AuditEvent(actor_type="staff", actor_id="cli", action="staff_export",
                                  person=flt.person, shop=flt.shop,
                                  fields=(flt.field,) if flt.field else ()))
        if fmt == "verify":
            lines = _verification_lines(_shard(service, shard_number))
        else:
            lines = (export_jsonl if fmt == "jsonl" else export_csv)(service.query, flt)
        count = 0
        with open(output, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line)
                count += 1
    finally:
        store.close()
    click.echo(f"wrote {count} lines to {output}")


@audit.command("new-epoch")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@one_line_errors
def audit_new_epoch(yes: bool) -> None:
    """After lost data: continue on the record with a new log epoch (docs/operations.md)."""
    from gateway.audit import AuditEvent
    from gateway.audit.continuity import Continuity

    settings = load_settings()
    store, service = _audit_service(settings)
    sharded = len(service.shards) > 1
    try:
        broken = []
        for shard in service.shards:
            continuity = Continuity(shard.log, service.keys.signer, settings.data_dir, len(service.shards))
            problem = continuity.check()
            if problem is not None:
                broken.append((shard, continuity))
                click.echo(f"found: {f'shard {shard.log.shard}: ' if sharded else ''}{problem}")
        if not broken:
            click.echo("nothing to do: the log continues the remembered checkpoint")
            return
        if not yes:
            click.confirm("Accept what Redis holds now and open a new epoch on the record?", abort=True)
        for shard, continuity in broken:
            # The event goes in first, so the epoch's first checkpoint covers it.
            shard.log.append_event(AuditEvent(actor_type="staff", actor_id="cli", action="log_epoch_started"))
            checkpoint = continuity.new_epoch()
            if service.combined is not None:  # combined notes over the lost history contradict it
                service.combined.forget_lost_history(shard.log.shard)
            where = f"shard {shard.log.shard}: " if sharded else ""
            click.echo(f"{where}new epoch: checkpoint over {checkpoint.size} entries, "
                       f"{' / '.join(checkpoint.extensions)}")
    finally:
        store.close()


@main.group()
def staff() -> None:
    """Compliance staff (declared in settings as [[staff]] entries)."""


@staff.command("token")
@click.argument("staff_id")
@click.option("--role", type=click.Choice(["auditor", "admin"]), default="auditor", show_default=True)
def staff_token(staff_id: str, role: str) -> None:
    """Draw a token for a staff member: the token is shown once, the settings keep its digest."""
    from gateway.audit.staff import new_staff_token

    token, digest = new_staff_token()
    click.echo(f"token (give it to {staff_id}, shown once): {token}")
    click.echo("add to the gateway's TOML settings:")
    click.echo(f'[[staff]]\nid = "{staff_id}"\nrole = "{role}"\ntoken_sha256 = "{digest}"')


