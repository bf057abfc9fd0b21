"""The gateway command: keys, shop secrets, and one-line configuration errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gateway.cli import main


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "policies" / "shops").mkdir(parents=True)
    (tmp_path / "policies" / "shops" / "s.yaml").write_text(yaml.safe_dump({
        "client_id": "shop-cli", "name": "CLI shop", "redirect_uris": ["https://s.example/cb"]}))
    (tmp_path / "policies" / "shops" / "p.yaml").write_text(yaml.safe_dump({
        "client_id": "app-public", "name": "Public app", "redirect_uris": ["https://p.example/cb"],
        "token_endpoint_auth_method": "none"}))
    monkeypatch.setenv("GATEWAY_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("GATEWAY_POLICIES_DIR", str(tmp_path / "policies"))
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


def test_kek_ring_init_rotate_rewrap_retire(env: Path, monkeypatch: pytest.MonkeyPatch,
                                            redis_url: str) -> None:
    import secrets as _secrets

    monkeypatch.setenv("GATEWAY_MASTER_KEY", _secrets.token_hex(32))
    monkeypatch.setenv("GATEWAY_REDIS_URL", redis_url)
    monkeypatch.setenv("GATEWAY_REDIS_KEY_PREFIX", f"cgtest:{_secrets.token_hex(6)}:")
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
