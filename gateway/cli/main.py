"""``gateway serve | demo | keys … | shops …``: thin wrappers over the services."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import click

from gateway.config import Settings, load_settings
from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from gateway.vault import SigningKeyRing

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(function: F) -> F:
    """Configuration problems end the command with one clear line, not a traceback."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except GatewayError as error:  # ConfigError and the vault's refusals alike
            click.echo(f"gateway: {error}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group()
def main() -> None:
    """Consent Gateway: an OpenID provider that releases only what people consent to."""


def _serve(settings: Settings, host: str, port: int, extra: list[Any] | None = None) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.telemetry import configure_logging

    configure_logging(settings.log_level)
    app = create_app(settings)
    servers = [uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                             proxy_headers=True, server_header=False))]
    servers += extra or []

    async def run_all() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(run_all())


def _serve_workers(settings: Settings, host: str, port: int, workers: int) -> None:
    """Several worker processes (uvicorn's process manager). The parent prepares what must
    exist once — keys, sealed secrets, the embedded Redis — then the workers share it."""
    import os

    import uvicorn

    from gateway.app import build_gateway
    from gateway.telemetry import configure_logging

    configure_logging(settings.log_level)
    gateway = build_gateway(settings)  # creates keys and secrets before workers race for them
    if settings.uses_embedded_redis:
        # The parent owns the embedded server; workers connect to its socket.
        os.environ["GATEWAY_REDIS_URL"] = gateway.store.url
    else:
        gateway.store.close()
    try:
        uvicorn.run("gateway.asgi:create", factory=True, host=host, port=port, workers=workers,
                    log_config=None, proxy_headers=True, server_header=False)
    finally:
        if settings.uses_embedded_redis:
            gateway.store.close()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (docs/performance.md: 2 on a 2-core machine).")
@one_line_errors
def serve(host: str, port: int, workers: int) -> None:
    """Run the gateway with the configured settings."""
    settings = load_settings()
    if workers > 1:
        _serve_workers(settings, host, port, workers)
    else:
        _serve(settings, host, port)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--shop-port", default=8001, show_default=True, type=int)
@one_line_errors
def demo(host: str, port: int, shop_port: int) -> None:
    """Run the gateway in demo mode with an embedded Redis and the demo shop."""
    import uvicorn

    from gateway.audit.staff import new_staff_token
    from gateway.demoshop import DEMO_SHOP_ID, create_demo_shop
    from gateway.oidc.clients import issue_client_secret

    issuer = f"http://{host}:{port}"
    staff_token, staff_digest = new_staff_token()  # a console sign-in for this demo run only
    settings = load_settings(demo=True, issuer=issuer, staff=[
        {"id": "demo-officer", "role": "admin", "token_sha256": staff_digest}])
    secret = issue_client_secret(settings.keys_dir, DEMO_SHOP_ID)
    shop_url = f"http://{host}:{shop_port}"
    shop_app = create_demo_shop(issuer=issuer, base_url=shop_url, client_secret=secret)
    shop_server = uvicorn.Server(uvicorn.Config(shop_app, host=host, port=shop_port,
                                                log_config=None, server_header=False))
    click.echo("Consent Gateway demo (demo mode: fictional people, never use in production)")
    click.echo(f"  open the demo shop:   {shop_url}/")
    click.echo(f"  gateway discovery:    {issuer}/.well-known/openid-configuration")
    click.echo(f"  your consent centre:  {issuer}/account")
    click.echo(f"  compliance console:   {issuer}/audit  (staff token: {staff_token})")
    where = f"embedded, data in {settings.data_dir}" if settings.uses_embedded_redis else settings.redis_url
    click.echo(f"  redis:                {where}")
    _serve(settings, host, port, extra=[shop_server])


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
                         master_key_file=settings.master_key_file, demo=settings.demo)


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
                    + count_secrets_sealed_under(settings.keys_dir, kek))

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
        audit = AuditService(store, settings.keys_dir, settings.audit_log_origin)
        audit.record(AuditEvent(actor_type="staff", actor_id="cli", action="key_rotated",
                                purpose=what))
    finally:
        store.close()


@main.group()
def audit() -> None:
    """The audit log: verify it, export it, show its public key."""


def _audit_service(settings: Settings) -> tuple[Any, Any]:
    from gateway.audit import AuditService
    from gateway.store import open_store

    store = open_store(settings)
    return store, AuditService(store, settings.keys_dir, settings.audit_log_origin)


def _verification_lines(service: Any) -> Any:
    """The whole log; once entries were archived, the live segment from the boundary to the
    latest checkpoint (archive format: it verifies on its own, like the archive files)."""
    from gateway.audit import export_log
    from gateway.audit.archive import Archiver
    from gateway.audit.boundary import archived_size

    start = archived_size(service.log)
    if start == 0:
        return export_log(service.log)
    archiver = Archiver(service.log, service.checkpointer)
    _, stop = archiver.segment(service.log.size())
    return archiver.lines(start, stop)


@audit.command("key")
@one_line_errors
def audit_key() -> None:
    """Print the verifier key that checks the log's checkpoints and proofs (publish it)."""
    from gateway.audit.keyfile import load_audit_keys

    settings = load_settings()
    click.echo(load_audit_keys(settings.keys_dir, settings.audit_log_origin).signer.verifier.to_string())


@audit.command("verify")
@click.option("--export", "export_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Check an export file offline instead of the live log.")
@click.option("--key", "keys", multiple=True, help="Trusted verifier key(s) for --export.")
@one_line_errors
def audit_verify(export_file: str | None, keys: tuple[str, ...]) -> None:
    """Check the chain, the tree and every checkpoint signature; name the first bad index."""
    from gateway.audit import NoteVerifier

    settings = load_settings()
    if export_file:
        if not keys:
            raise ConfigError("--export needs at least one --key (the log's published verifier key)")
        verifiers = [NoteVerifier.from_string(key) for key in keys]
        report = _verify_file(export_file, verifiers)
    else:
        store, service = _audit_service(settings)
        try:
            report = service.verify()
        finally:
            store.close()
    if report.problem is not None:
        where = f"index {report.problem.index}" if report.problem.index is not None else "log"
        click.echo(f"FAILED at {where}: {report.problem.reason}")
        sys.exit(1)
    click.echo(f"ok: {report.size} events, {report.checkpoints_checked} checkpoints verified, "
               f"latest checkpoint covers {report.latest_checkpoint}, {report.unsigned_tail} not yet signed")


def _verify_file(path: str, verifiers: list[Any]) -> Any:
    """A whole-log export or an archive segment, told apart by the header's format."""
    import json

    from gateway.audit import verify_export
    from gateway.audit.archive import ARCHIVE_FORMAT, verify_archive
    from gateway.audit.errors import AuditError

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
        return verify_export(rest, verifiers, verifiers[0].name)
    except AuditError as error:
        raise ConfigError(f"{path}: {error}") from None


@audit.command("archive")
@click.option("--output", "output", type=click.Path(dir_okay=False), required=True)
@click.option("--before", "before", type=int, default=None,
              help="Archive entries below this index (rounded down to a signed checkpoint).")
@click.option("--older-than-days", "days", type=int, default=None,
              help="Archive entries older than this many days (instead of --before).")
@one_line_errors
def audit_archive(output: str, before: int | None, days: int | None) -> None:
    """Move old entries to a file that verifies on its own; proofs keep working for them."""
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
        if days is not None:
            cutoff = _time.strftime("%Y%m%d%H", _time.gmtime(_time.time() - days * 86400))
            hours = store.redis.hgetall(store.keys.audit_hours())
            lasts = [int(v) for k, v in hours.items()
                     if k.decode().endswith(":last") and k.decode().split(":")[0] < cutoff]
            before = max(lasts, default=-1) + 1
        archiver = Archiver(service.log, service.checkpointer)
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
    click.echo(f"archived entries [{start}, {stop}) to {output}; Redis keeps their tree hashes")


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
@one_line_errors
def audit_export(output: str, fmt: str, **filters: str | None) -> None:
    """Write the log (or a filtered list of events) to a file, streamed."""
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
            lines = _verification_lines(service)
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


@main.group()
def policy() -> None:
    """Consent policies in policies/ (catalogue.yaml and shops/*.yaml)."""


@policy.command("check")
@one_line_errors
def policy_check() -> None:
    """Lint the whole policies folder; every problem with its file and line."""
    from gateway.oidc.clients import ShopRegistry
    from gateway.policy import check_folder

    settings = load_settings()
    problems = [str(p) for p in check_folder(settings.policies_dir)]
    if not problems:
        try:  # the protocol part of the shop files too
            ShopRegistry.load(settings.policies_dir, settings.keys_dir, settings.signing_alg)
        except ConfigError as error:
            problems.append(str(error))
    for problem in problems:
        click.echo(problem)
    if problems:
        sys.exit(1)
    click.echo(f"{settings.policies_dir}: no problems")


@policy.command("schema")
def policy_schema() -> None:
    """Print the JSON Schema of a shop file's policy and of the catalogue."""
    import json

    from gateway.policy.schema import policy_json_schema

    click.echo(json.dumps(policy_json_schema(), indent=2, ensure_ascii=False))


@main.group()
def shops() -> None:
    """Shops declared in policies/shops."""


@shops.command("list")
@one_line_errors
def shops_list() -> None:
    from gateway.oidc.clients import ShopRegistry

    settings = load_settings()
    for shop in ShopRegistry.load(settings.policies_dir, settings.keys_dir, settings.signing_alg):
        click.echo(f"{shop.client_id}  {shop.config.token_endpoint_auth_method}  {shop.config.name}")


@shops.command("secret")
@click.argument("client_id")
@one_line_errors
def shops_secret(client_id: str) -> None:
    """Draw a new client secret; it is printed once and only its digest is kept."""
    from gateway.oidc.clients import ShopRegistry, issue_client_secret

    settings = load_settings()
    shop = ShopRegistry.load(settings.policies_dir, settings.keys_dir, settings.signing_alg).get(client_id)
    if shop is None:
        raise ConfigError(f"no shop with client_id {client_id!r} in {settings.policies_dir}/shops")
    if shop.config.is_public:
        raise ConfigError(f"shop {client_id!r} is a public client (token_endpoint_auth_method: none)")
    click.echo(issue_client_secret(settings.keys_dir, client_id))
