"""The gateway command: keys, shop secrets, and one-line configuration errors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli import main
from gateway.store import Store


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Store) -> Path:
    (tmp_path / "policies" / "shops").mkdir(parents=True)
    (tmp_path / "policies" / "shops" / "s.yaml").write_text(yaml.safe_dump({
        "client_id": "shop-cli", "name": "CLI shop", "redirect_uris": ["https://s.example/cb"]}))
    (tmp_path / "policies" / "shops" / "p.yaml").write_text(yaml.safe_dump({
        "client_id": "app-public", "name": "Public app", "redirect_uris": ["https://p.example/cb"],
        "token_endpoint_auth_method": "none"}))
    monkeypatch.setenv("GATEWAY_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("GATEWAY_POLICIES_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GATEWAY_REDIS_URL", store.url)
    monkeypatch.setenv("GATEWAY_REDIS_KEY_PREFIX", store.keys.prefix)  # cleaned up by the fixture
    return tmp_path


def test_signing_keys_list_and_rotate(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DEMO", "true")  # an unsealed development KEK ring is enough here
    runner = CliRunner()
    assert runner.invoke(main, ["keys", "init"]).exit_code == 0
    listed = runner.invoke(main, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("primary") == 3  # one KEK, ES256 and RS256
    rotated = runner.invoke(main, ["keys", "rotate", "--signing", "ES256"])
    assert rotated.exit_code == 0 and "new primary ES256 signing key" in rotated.output
    after = runner.invoke(main, ["keys", "list"]).output
    assert after.count("retiring") == 1 and after.count("primary") == 3


def test_shop_secret_is_shown_once_and_stored_as_digest(env: Path) -> None:
    result = CliRunner().invoke(main, ["shops", "secret", "shop-cli"])
    assert result.exit_code == 0
    secret = result.output.strip()
    assert len(secret) >= 43
    stored = (env / "keys" / "shops" / "shop-cli.sha256").read_text()
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in stored


def test_public_client_gets_no_secret(env: Path) -> None:
    result = CliRunner().invoke(main, ["shops", "secret", "app-public"])
    assert result.exit_code == 2
    assert "public client" in result.output


def test_unknown_shop_is_one_line(env: Path) -> None:
    result = CliRunner().invoke(main, ["shops", "secret", "nobody"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1


def test_misconfiguration_is_one_line_naming_the_setting(env: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ISSUER", "http://not-loopback.example")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert result.output.startswith("gateway: invalid setting GATEWAY_ISSUER")
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_invalid_shop_file_refuses_to_start(env: Path) -> None:
    (env / "policies" / "shops" / "bad.yaml").write_text(yaml.safe_dump({
        "client_id": "bad", "name": "Bad", "redirect_uris": ["http://public.example/cb"]}))
    result = CliRunner().invoke(main, ["shops", "list"])
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "https" in result.output


def test_policy_check_reports_each_problem_with_file_and_line(env: Path) -> None:
    catalogue = Path(__file__).resolve().parents[2] / "policies" / "catalogue.yaml"
    (env / "policies" / "catalogue.yaml").write_text(catalogue.read_text(encoding="utf-8"))
    (env / "policies" / "shops" / "s.yaml").write_text(yaml.safe_dump({
        "client_id": "shop-cli", "name": "CLI shop", "redirect_uris": ["https://s.example/cb"],
        "policy": {"fields": [{"field": "shoe_size", "purpose": "x"},
                              {"field": "nickname", "purpose": "x", "required": True}]}}))
    result = CliRunner().invoke(main, ["policy", "check"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(str(env / "policies" / "shops" / "s.yaml") + ":") for line in lines)


def test_policy_check_passes_on_the_repository_policies(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_POLICIES_DIR", str(Path(__file__).resolve().parents[2] / "policies"))
    monkeypatch.setenv("GATEWAY_KEYS_DIR", str(tmp_path))
    result = CliRunner().invoke(main, ["policy", "check"])
    assert result.exit_code == 0, result.output
    assert "no problems" in result.output


def test_published_policy_schema_is_current() -> None:
    import json

    published = Path(__file__).resolve().parents[2] / "docs" / "policy-schema.json"
    result = CliRunner().invoke(main, ["policy", "schema"])
    assert json.loads(result.output) == json.loads(published.read_text(encoding="utf-8"))


def test_kek_ring_init_rotate_rewrap_retire(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets as _secrets

    monkeypatch.setenv("GATEWAY_MASTER_KEY", _secrets.token_hex(32))
    runner = CliRunner()
    assert "sealed under the master key" in runner.invoke(main, ["keys", "init"]).output
    again = runner.invoke(main, ["keys", "init"])
    assert again.exit_code == 2 and again.output.startswith("gateway: ")
    old = runner.invoke(main, ["keys", "list"]).output.split("key-encryption keys")[1].split()[1]
    rotated = runner.invoke(main, ["keys", "rotate"])
    assert rotated.exit_code == 0 and "new primary key-encryption key" in rotated.output
    rewrap = runner.invoke(main, ["keys", "rewrap"])
    assert rewrap.exit_code == 0, rewrap.output
    assert "failed 0" in rewrap.output
    early = runner.invoke(main, ["keys", "retire", old])
    assert early.exit_code == 2  # inside the grace period after the rotation
    retire = runner.invoke(main, ["keys", "retire", old, "--grace", "0"])
    assert retire.exit_code == 0, retire.output
    listed = runner.invoke(main, ["keys", "list"]).output
    assert f"{old}  retired" in listed


def test_keys_without_master_key_outside_demo_is_one_line(env: Path) -> None:
    result = CliRunner().invoke(main, ["keys", "init"])
    assert result.exit_code == 2
    assert "GATEWAY_MASTER_KEY" in result.output and result.output.count("\n") == 1


def _audit_with_events(env: Path, store: Store, count: int, shards: int = 1) -> Any:
    """Events written the way the gateway writes them: the audit key sealed under the KEK ring
    the CLI also opens (the calling test sets GATEWAY_DEMO for a development ring)."""
    from gateway.audit import AuditEvent, AuditService
    from gateway.cli.keys import sealer_for
    from gateway.config import load_settings

    service = AuditService(store, env / "keys", "gateway.test/audit", every_events=2,
                           sealer=sealer_for(load_settings()), shards=shards)
    for index in range(count):
        service.record(AuditEvent(actor_type="shop", actor_id="shop-a", action="userinfo_read",
                                  person=f"p{index}", shop="shop-a", fields=("phone",)))
    return service


def test_audit_verify_export_and_offline_check(env: Path, store: Store,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUDIT_ORIGIN", "gateway.test/audit")
    monkeypatch.setenv("GATEWAY_DEMO", "true")
    _audit_with_events(env, store, 5)
    runner = CliRunner()
    live = runner.invoke(main, ["audit", "verify"])
    assert live.exit_code == 0, live.output
    assert live.output.startswith("ok: 5 events")
    key = runner.invoke(main, ["audit", "key"]).output.strip()
    assert key.startswith("gateway.test/audit+")
    exported = env / "audit.jsonl"
    assert runner.invoke(main, ["audit", "export", "--output", str(exported)]).exit_code == 0
    offline = runner.invoke(main, ["audit", "verify", "--export", str(exported), "--key", key])
    assert offline.exit_code == 0, offline.output
    csv_file = env / "phone.csv"
    result = runner.invoke(main, ["audit", "export", "--output", str(csv_file), "--format", "csv",
                                  "--field", "phone"])
    assert result.exit_code == 0 and csv_file.read_text().count("userinfo_read") == 5


def test_audit_verify_names_the_first_tampered_index(env: Path, store: Store,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUDIT_ORIGIN", "gateway.test/audit")
    monkeypatch.setenv("GATEWAY_DEMO", "true")
    _audit_with_events(env, store, 6)
    entries = next(k for k in store.redis.scan_iter(match=f"{store.keys.prefix}*entries"))
    raw = store.redis.hget(entries, "3")
    assert isinstance(raw, bytes)
    store.redis.hset(entries, "3", raw.replace(b"shop-a", b"shop-b"))
    result = CliRunner().invoke(main, ["audit", "verify"])
    assert result.exit_code == 1
    assert result.output.startswith("FAILED at index 3")


def test_audit_commands_work_across_shards(env: Path, store: Store,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("GATEWAY_AUDIT_ORIGIN", "gateway.test/audit")
    monkeypatch.setenv("GATEWAY_DEMO", "true")
    monkeypatch.setenv("GATEWAY_AUDIT_SHARDS", "3")
    service = _audit_with_events(env, store, 12, shards=3)
    runner = CliRunner()
    live = runner.invoke(main, ["audit", "verify"])
    assert live.exit_code == 0 and live.output.startswith("ok: 12 events in 3 shards"), live.output
    events = env / "events.jsonl"
    written = runner.invoke(main, ["audit", "export", "--format", "jsonl", "--output", str(events)])
    assert written.exit_code == 0, written.output
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    assert {row["shard"] for row in rows} == {s.log.shard for s in service.shards if s.log.size()}
    key = runner.invoke(main, ["audit", "key"]).output.strip()
    shard = max(range(3), key=lambda i: service.shards[i].log.size())
    exported = env / "shard.jsonl"
    export = ["audit", "export", "--output", str(exported), "--shard"]
    assert runner.invoke(main, [*export, str(shard)]).exit_code == 0
    offline = runner.invoke(main, ["audit", "verify", "--export", str(exported), "--key", key,
                                   "--shard", str(shard)])
    assert offline.exit_code == 0, offline.output
    assert runner.invoke(main, [*export, "3"]).exit_code == 2  # no such shard
    files = [str(env / f"shard-{i}.jsonl") for i in range(3)]
    for i, path in enumerate(files):
        assert runner.invoke(main, ["audit", "export", "--output", path, "--shard", str(i)]).exit_code == 0
    together = runner.invoke(main, ["audit", "verify", *(f"--export={p}" for p in files), "--key", key])
    assert together.exit_code == 0 and together.output.startswith("ok: ") and "in 3 shards" in together.output
    keys = store.keys.audit_shard(shard)
    raw = store.redis.hget(keys.audit_entries(), "1")
    assert isinstance(raw, bytes)
    store.redis.hset(keys.audit_entries(), "1", raw.replace(b"shop-a", b"shop-b"))
    failed = runner.invoke(main, ["audit", "verify"])
    assert failed.exit_code == 1, failed.output
    assert failed.output.startswith(f"FAILED at shard {shard} index 1")


def test_staff_token_prints_the_token_once_and_a_digest_for_settings() -> None:
    import hashlib

    result = CliRunner().invoke(main, ["staff", "token", "alice", "--role", "admin"])
    token = result.output.split(": ", 1)[1].splitlines()[0]
    assert f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"' in result.output
    assert 'role = "admin"' in result.output


def test_audit_archive_moves_old_entries_to_a_file_that_verifies(env: Path, store: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUDIT_ORIGIN", "gateway.test/audit")
    monkeypatch.setenv("GATEWAY_DEMO", "true")
    service = _audit_with_events(env, store, 7)  # checkpoints every 2 events
    service.checkpointer.checkpoint()
    runner = CliRunner()
    archive_file = env / "archive-1.jsonl"
    result = runner.invoke(main, ["audit", "archive", "--before", "5", "--output", str(archive_file)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("archived entries [0, 4)")
    key = runner.invoke(main, ["audit", "key"]).output.strip()
    offline = runner.invoke(main, ["audit", "verify", "--export", str(archive_file), "--key", key])
    assert offline.exit_code == 0, offline.output
    live = runner.invoke(main, ["audit", "verify"])
    assert live.exit_code == 0 and live.output.startswith("ok: 7 events"), live.output
    rest = env / "rest.jsonl"
    assert runner.invoke(main, ["audit", "export", "--output", str(rest)]).exit_code == 0
    assert runner.invoke(main, ["audit", "verify", "--export", str(rest), "--key", key]).exit_code == 0
    both = runner.invoke(main, ["audit", "archive", "--before", "1", "--older-than-days", "1",
                                "--output", str(env / "x")])
    assert both.exit_code == 2


def test_the_audit_key_is_sealed_and_rewrap_reseals_it(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets as _secrets

    monkeypatch.setenv("GATEWAY_MASTER_KEY", _secrets.token_hex(32))
    runner = CliRunner()
    assert runner.invoke(main, ["keys", "init"]).exit_code == 0
    key = runner.invoke(main, ["audit", "key"]).output.strip()
    sealed = env / "keys" / "audit" / "checkpoint.ed25519.sealed"
    assert sealed.exists() and b"PRIVATE KEY" not in sealed.read_bytes()
    assert not (env / "keys" / "audit" / "checkpoint.ed25519.pem").exists()
    before = sealed.read_bytes()
    assert runner.invoke(main, ["keys", "rotate"]).exit_code == 0
    rewrap = runner.invoke(main, ["keys", "rewrap"])
    assert rewrap.exit_code == 0, rewrap.output
    assert sealed.read_bytes()[1:5] != before[1:5]  # now under the new KEK
    assert runner.invoke(main, ["audit", "key"]).output.strip() == key  # the same key
