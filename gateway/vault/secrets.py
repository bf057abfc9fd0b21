"""Gateway-wide random secrets kept in ``keys/`` (pairwise subjects, identity links,
pseudonyms, CSRF tokens).

With a sealer (the gateway always passes one) each secret is stored sealed under the KEK
ring as ``keys/<name>.sealed``: a copy of ``keys/`` without the master key reveals none of
them. Without one (tests of other parts) it is a plain ``keys/<name>.key``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from gateway.errors import ConfigError
from gateway.vault.errors import VaultError
from gateway.vault.files import write_private_file
from gateway.vault.sealing import KekSealer

SECRET_BYTES = 32
SEALED_SUFFIX = ".sealed"


def _label(name: str) -> str:
    return f"secret/{name}"


def load_or_create_secret(keys_dir: Path, name: str, sealer: KekSealer | None = None) -> bytes:
    """Return the 256-bit secret ``name``, creating it on first start."""
    path = keys_dir / (f"{name}{SEALED_SUFFIX}" if sealer else f"{name}.key")
    if not path.exists():
        value = secrets.token_bytes(SECRET_BYTES)
        write_private_file(path, sealer.seal(value, _label(name)) if sealer else value)
    try:
        data = path.read_bytes()
        if sealer is not None:
            data = sealer.open(data, _label(name))
    except (OSError, VaultError) as error:
        raise ConfigError(f"invalid key file {path}: {error}") from None
    if len(data) != SECRET_BYTES:
        raise ConfigError(f"invalid key file {path}: expected {SECRET_BYTES} bytes")
    return data


def _sealed_secrets(keys_dir: Path) -> list[Path]:
    return sorted(keys_dir.glob(f"*{SEALED_SUFFIX}"))


def reseal_secrets(keys_dir: Path, sealer: KekSealer) -> int:
    """Re-seal every sealed secret under the primary KEK (part of ``gateway keys rewrap``)."""
    paths = _sealed_secrets(keys_dir)
    for path in paths:
        name = path.name.removesuffix(SEALED_SUFFIX)
        value = sealer.open(path.read_bytes(), _label(name))
        write_private_file(path, sealer.seal(value, _label(name)))
    return len(paths)


def count_secrets_sealed_under(keys_dir: Path, kek_id: str) -> int:
    return sum(1 for path in _sealed_secrets(keys_dir) if KekSealer.kek_of(path.read_bytes()) == kek_id)
