"""Gateway-wide random secrets kept in ``keys/`` (for example the pairwise-subject key)."""

from __future__ import annotations

import secrets
from pathlib import Path

from gateway.errors import ConfigError
from gateway.vault.files import write_private_file

SECRET_BYTES = 32


def load_or_create_secret(keys_dir: Path, name: str) -> bytes:
    """Return the 256-bit secret ``keys/<name>.key``, creating it on first start."""
    path = keys_dir / f"{name}.key"
    if not path.exists():
        write_private_file(path, secrets.token_bytes(SECRET_BYTES))
    data = path.read_bytes()
    if len(data) != SECRET_BYTES:
        raise ConfigError(f"invalid key file {path}: expected {SECRET_BYTES} bytes")
    return data
