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
from gateway.vault.files import write_private_file

KEY_FILE = Path("audit") / "checkpoint.ed25519.pem"
_MAC_INFO = b"consent-gateway audit entry MAC v1"


@dataclass(frozen=True)
class AuditKeys:
    """The checkpoint signer and the entry MAC key. Neither appears in ``repr``."""

    signer: NoteSigner
    mac_key: bytes = field(repr=False)


def _create_once(path: Path) -> None:
    seed_pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    write_private_file(temporary, seed_pem)
    try:
        os.link(temporary, path)  # atomic and exclusive: the first process to link wins
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def load_audit_keys(keys_dir: Path, key_name: str) -> AuditKeys:
    """Load (or create) the audit key; ``key_name`` is the checkpoint origin, e.g.
    ``gateway.example/audit`` (c2sp.org/tlog-checkpoint: the key name should equal the origin)."""
    path = keys_dir / KEY_FILE
    if not path.exists():
        _create_once(path)
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except ValueError:
        raise ConfigError(f"invalid key file {path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"invalid key file {path}: not an Ed25519 key")
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(seed)
    return AuditKeys(NoteSigner(key_name, key), mac_key)
