"""Provider secrets, read once at start-up from an environment variable or a file in keys/."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from gateway.config.settings import SecretRef
from gateway.errors import ConfigError


def read_secret(ref: SecretRef, keys_dir: Path, what: str) -> SecretStr:
    """The secret ``ref`` points to; :class:`ConfigError` naming it when it is missing."""
    if ref.env is not None:
        value = os.environ.get(ref.env, "")
        if not value.strip():
            raise ConfigError(f"{what}: environment variable {ref.env} is not set")
        return SecretStr(value.strip())
    path = keys_dir / str(ref.file)
    try:
        value = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{what}: cannot read {path}: {type(error).__name__}") from None
    if not value.strip():
        raise ConfigError(f"{what}: {path} is empty")
    return SecretStr(value.strip())
