"""`gateway audit verify` tells other settings (issuer/origin, keys directory) from tampering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gateway.audit import AuditEvent, AuditService, verify_export
from gateway.audit.checkpoint import Checkpoint, sign_checkpoint
from gateway.audit.export import export_log
from gateway.cli import main
from gateway.cli.keys import sealer_for
from gateway.config import load_settings
from gateway.store import Store


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: Store) -> Path:
    (tmp_path / "policies" / "shops").mkdir(parents=True)
    (tmp_path / "policies" / "shops" / "s.yaml").write_text(yaml.safe_dump({
        "client_id": "shop-cli", "name": "CLI shop", "redirect_uris": ["https://s.example/cb"]}))
    monkeypatch.setenv("GATEWAY_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("GATEWAY_POLICIES_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GATEWAY_REDIS_URL", store.url)
    monkeypatch.setenv("GATEWAY_REDIS_KEY_PREFIX", store.keys.prefix)
    monkeypatch.setenv("GATEWAY_DEMO", "true")
    monkeypatch.setenv("GATEWAY_ISSUER", "https://gateway.test")
    return tmp_path


def write_log(store: Store, keys_dir: Path, count: int, every_events: int = 2,
              shards: int = 1) -> AuditService:
    """Events as a gateway with GATEWAY_ISSUER=https://gateway.test writes them."""
    service = AuditService(store, keys_dir, "gateway.test/audit", every_events=every_events,
                           sealer=sealer_for(load_settings()), shards=shards)
    for index in range(count):
        service.record(AuditEvent(actor_type="shop", actor_id="shop-a", action="userinfo_read",
                                  person=f"p{index}", shop="shop-a", fields=("phone",)))
    return service


def verify(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["audit", "verify", *args])
    return result.exit_code, result.output


def test_a_different_issuer_is_a_settings_mismatch_naming_both_origins(
        env: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    write_log(store, env / "keys", 5)
    assert verify()[0] == 0
    monkeypatch.setenv("GATEWAY_ISSUER", "https://other.example")
    code, output = verify()
    assert code == 2 and output.count("\n") == 1, output
    assert "settings mismatch" in output and "FAILED" not in output
    assert "'gateway.test/audit'" in output and "'other.example/audit'" in output
    assert "GATEWAY_ISSUER=https://other.example" in output


def test_an_explicit_origin_setting_is_named_too(env: Path, store: Store,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write_log(store, env / "keys", 3)
    monkeypatch.setenv("GATEWAY_AUDIT_ORIGIN", "elsewhere.example/log")
    code, output = verify()
    assert code == 2 and "GATEWAY_AUDIT_ORIGIN" in output and "'elsewhere.example/log'" in output


def test_another_keys_directory_is_a_key_mismatch(env: Path, store: Store,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    service = write_log(store, env / "keys", 5)
    written_by = service.keys.signer.verifier.key_id.hex()
    other = env / "other-keys"
    monkeypatch.setenv("GATEWAY_KEYS_DIR", str(other))
    code, output = verify()
    assert code == 2 and output.count("\n") == 1, output
    assert "settings mismatch" in output and f"gateway.test/audit+{written_by}" in output
    assert f"GATEWAY_KEYS_DIR={other}" in output


def test_another_key_without_any_checkpoint_is_told_by_the_macs(env: Path, store: Store,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    write_log(store, env / "keys", 4, every_events=1000)  # nothing signed yet
    monkeypatch.setenv("GATEWAY_KEYS_DIR", str(env / "other-keys"))
    code, output = verify()
    assert code == 2 and "settings mismatch" in output and "MAC" in output, output


def test_tampering_is_still_tampering(env: Path, store: Store) -> None:
    write_log(store, env / "keys", 6)
    entries = next(k for k in store.redis.scan_iter(match=f"{store.keys.prefix}*entries"))
    raw = store.redis.hget(entries, "0")
    assert isinstance(raw, bytes)
    store.redis.hset(entries, "0", raw.replace(b"shop-a", b"shop-b"))
    code, output = verify()
    assert code == 1 and output.startswith("FAILED at index 0"), output


def test_a_forged_checkpoint_among_good_ones_is_tampering(env: Path, store: Store) -> None:
    """One checkpoint signed by another key beside ours: not a settings question."""
    write_log(store, env / "keys", 6)
    foreign = write_log(store, env / "foreign-keys", 0)  # another key, the same origin
    checkpoints = store.keys.audit_checkpoints()
    member, score = store.redis.zrange(checkpoints, 0, 0, withscores=True)[0]
    fields = json.loads(member)
    checkpoint = Checkpoint.parse(fields["note"][: fields["note"].rfind("\n\n") + 1])
    fields["note"] = sign_checkpoint(checkpoint, foreign.keys.signer)
    store.redis.zrem(checkpoints, member)
    store.redis.zadd(checkpoints, {json.dumps(fields, sort_keys=True): score})
    code, output = verify()
    assert code == 1 and output.startswith("FAILED"), output


def test_an_export_checked_with_another_key_says_so(env: Path, store: Store) -> None:
    service = write_log(store, env / "keys", 5)
    other = write_log(store, env / "spare-keys", 0)
    lines = list(export_log(service.log))
    assert verify_export(lines, [service.keys.signer.verifier], "gateway.test/audit").ok
    wrong = verify_export(lines, [other.keys.signer.verifier], "gateway.test/audit")
    assert wrong.mismatch is not None and wrong.mismatch.setting == "key"
    exported = env / "audit.jsonl"
    exported.write_text("".join(lines))
    code, output = verify("--export", str(exported), "--key", other.verifier_key)
    assert code == 2 and "settings mismatch" in output and "--key" in output, output


@pytest.mark.parametrize("configured", ["1", "2"])
def test_a_log_signed_as_three_shards_checked_with_another_count_is_a_settings_mismatch(
        env: Path, store: Store, monkeypatch: pytest.MonkeyPatch, configured: str) -> None:
    write_log(store, env / "keys", 12, shards=3)
    monkeypatch.setenv("GATEWAY_AUDIT_SHARDS", configured)
    code, output = verify()
    assert code == 2, output
    assert output.strip() == (f"gateway: settings mismatch: the log's combined checkpoints list 3 shards, "
                              f"configured: {configured} (GATEWAY_AUDIT_SHARDS); this is no sign of "
                              "tampering; run verify with the settings the log was written with")
    monkeypatch.setenv("GATEWAY_AUDIT_SHARDS", "3")
    assert verify()[0] == 0


def test_a_gateway_started_with_another_shard_count_refuses_to_serve(env: Path, store: Store) -> None:
    write_log(store, env / "keys", 12, shards=3)
    other = AuditService(store, env / "keys", "gateway.test/audit", sealer=sealer_for(load_settings()),
                         data_dir=env / "data", shards=2)
    assert other.continuity is not None
    problem = other.continuity.check()
    assert problem is not None and "signed as 3 shards but GATEWAY_AUDIT_SHARDS=2" in problem

