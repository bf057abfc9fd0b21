"""The audit log's key: ``keys/audit/checkpoint.ed25519.pem``, created on first use (mode 0600).

One Ed25519 key does two jobs, kept apart by derivation:

- it signs checkpoints (C2SP signed notes), which anyone holding the public key can check;
- HKDF-SHA256 (RFC 5869) over its seed, with its own ``info`` label, gives the key that MACs
  every entry at append time. Redis never sees either, so someone who can write to Redis but
  cannot read ``keys/`` cannot forge an entry that ``verify`` would accept — not even in the
  tail that no checkpoint covers yet.

Several processes may start at once. The key is written to a private temporary file and then
*linked* into place, which fails if another process got there first; every process then reads
the one file that won, so no two processes ever use different keys.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from gateway.audit.note import NoteSigner
from gateway.errors import ConfigError
from gateway.vault.errors import VaultError
from gateway.vault.files import write_private_file
from gateway.vault.sealing import KekSealer


def reseal_audit_key(keys_dir: Path, sealer: KekSealer) -> int:
    """Re-seal the audit key under the primary KEK (part of ``gateway keys rewrap``)."""
    path = keys_dir / SEALED_KEY_FILE
    if not path.exists():
        return 0
    write_private_file(path, sealer.seal(sealer.open(path.read_bytes(), SEAL_LABEL), SEAL_LABEL))
    return 1


def audit_key_sealed_under(keys_dir: Path, kek_id: str) -> int:
    path = keys_dir / SEALED_KEY_FILE
    return int(path.exists() and KekSealer.kek_of(path.read_bytes()) == kek_id)

KEY_FILE = Path("audit") / "checkpoint.ed25519.pem"
SEALED_KEY_FILE = Path("audit") / "checkpoint.ed25519.sealed"  # sealed under the KEK ring
SEAL_LABEL = "audit/checkpoint"
_MAC_INFO = b"consent-gateway audit entry MAC v1"


@dataclass(frozen=True)
class AuditKeys:
    """The checkpoint signer and the entry MAC key. Neither appears in ``repr``."""

    signer: NoteSigner
    mac_key: bytes = field(repr=False)


def _create_once(path: Path, sealer: KekSealer | None) -> None:
    seed_pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    write_private_file(temporary, sealer.seal(seed_pem, SEAL_LABEL) if sealer else seed_pem)
    try:
        os.link(temporary, path)  # atomic and exclusive: the first process to link wins
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def load_audit_keys(keys_dir: Path, key_name: str, sealer: KekSealer | None = None) -> AuditKeys:
    """Load (or create) the audit key; ``key_name`` is the checkpoint origin, e.g.
    ``gateway.example/audit`` (c2sp.org/tlog-checkpoint: the key name should equal the origin).

    With a ``sealer`` (the gateway always passes one) the key file is sealed under the KEK
    ring, like the signing keys: ``keys/`` without the master key forges no checkpoint.
    """
    path = keys_dir / (SEALED_KEY_FILE if sealer else KEY_FILE)
    if not path.exists():
        _create_once(path, sealer)
    try:
        data = path.read_bytes()
        if sealer is not None:
            data = sealer.open(data, SEAL_LABEL)
        key = load_pem_private_key(data, password=None)
    except (ValueError, VaultError) as error:
        raise ConfigError(f"invalid key file {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"invalid key file {path}: not an Ed25519 key")
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(seed)
    return AuditKeys(NoteSigner(key_name, key), mac_key)
