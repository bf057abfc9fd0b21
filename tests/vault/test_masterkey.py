"""The master key is read from a setting's value or a file, as hex, base64 or raw bytes."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.vault import MasterKey, MasterKeyInvalidError, load_master_key

RAW = secrets.token_bytes(32)


@pytest.mark.parametrize("text", [
    RAW.hex(), RAW.hex().upper(), base64.b64encode(RAW).decode(),
    base64.urlsafe_b64encode(RAW).decode().rstrip("="), f"  {RAW.hex()}\n",
])
def test_hex_and_base64_values_give_the_same_key(text: str) -> None:
    key = load_master_key(text, None)
    assert key is not None
    assert key.check_value() == MasterKey(RAW).check_value()


def test_a_file_may_hold_raw_bytes_or_text(tmp_path: Path) -> None:
    raw_file, text_file = tmp_path / "raw", tmp_path / "text"
    raw_file.write_bytes(RAW)
    text_file.write_text(base64.b64encode(RAW).decode() + "\n")
    for path in (raw_file, text_file):
        key = load_master_key(None, path)
        assert key is not None and key.check_value() == MasterKey(RAW).check_value()


def test_no_source_means_no_master_key() -> None:
    assert load_master_key(None, None) is None
    assert load_master_key("", None) is None


@pytest.mark.parametrize("text", [
    "", "short", RAW.hex()[:-2], base64.b64encode(RAW + b"x").decode(), "é" * 44,
])
def test_a_value_that_is_not_32_bytes_is_refused_with_one_line(text: str) -> None:
    with pytest.raises(MasterKeyInvalidError) as caught:
        MasterKey.parse(text)
    assert "\n" not in str(caught.value) and "GATEWAY_MASTER_KEY" in str(caught.value)


def test_both_sources_at_once_are_refused(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(RAW)
    with pytest.raises(MasterKeyInvalidError, match="only one of"):
        load_master_key(RAW.hex(), tmp_path / "key")


def test_an_unreadable_or_binary_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyInvalidError, match="cannot read"):
        load_master_key(None, tmp_path / "missing")
    (tmp_path / "binary").write_bytes(b"\xff" * 40)
    with pytest.raises(MasterKeyInvalidError, match="neither"):
        load_master_key(None, tmp_path / "binary")


def test_master_key_errors_are_config_errors_and_the_key_never_prints() -> None:
    assert issubclass(MasterKeyInvalidError, ConfigError)
    key = MasterKey(RAW)
    for text in (repr(key), str(key), f"{key}"):
        assert RAW.hex() not in text and base64.b64encode(RAW).decode() not in text
