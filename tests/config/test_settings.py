"""Settings from the environment and a TOML file; bad values give one line naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import ConfigError


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('issuer = "https://from-toml.example"\ncode_ttl = 30\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    monkeypatch.setenv("GATEWAY_CODE_TTL", "45")
    settings = load_settings()
    assert settings.issuer == "https://from-toml.example"
    assert settings.code_ttl == 45


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("GATEWAY_ISSUER", "http://public.example", "GATEWAY_ISSUER"),
    ("GATEWAY_ISSUER", "https://x.example/?q=1", "GATEWAY_ISSUER"),
    ("GATEWAY_CODE_TTL", "ten", "GATEWAY_CODE_TTL"),
    ("GATEWAY_REDIS_URL", "http://localhost", "GATEWAY_REDIS_URL"),
    ("GATEWAY_SIGNING_ALG", "HS256", "GATEWAY_SIGNING_ALG"),
])
def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
                                        message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG", "/nonexistent/gateway.toml")
    with pytest.raises(ConfigError, match="GATEWAY_CONFIG"):
        load_settings()


def test_malformed_toml_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("issuer = = broken")
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))
    with pytest.raises(ConfigError, match="GATEWAY_CONFIG"):
        load_settings()


def test_issuer_trailing_slash_is_removed() -> None:
    assert load_settings(issuer="https://id.example/").issuer == "https://id.example"
