"""The key ring that signs ID tokens.

Layout under ``keys/signing/``: ``ring.json`` lists the keys (kid, algorithm, state, dates)
and ``<kid>.pem`` holds each private key (mode 0600). There is one *primary* key per
algorithm; ES256 by default, RS256 for shops that cannot verify ECDSA. Rotating makes a new
primary and keeps the old key *retiring*: still published in the JWKS until every token it
signed has expired, then dropped from the JWKS.

Every process reads the same directory; a process notices a rotation done by
``gateway keys rotate`` the next time it signs or serves the JWKS (the ring file's
modification time is checked at most once a second).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from gateway.errors import ConfigError
from gateway.vault.errors import VaultError
from gateway.vault.files import write_private_file
from gateway.vault.sealing import KekSealer

SigningAlg = Literal["ES256", "RS256"]
SUPPORTED_ALGORITHMS: tuple[SigningAlg, ...] = ("ES256", "RS256")
_RELOAD_CHECK_SECONDS = 1.0
RSA_KEY_BITS = 3072  # NIST SP 800-57: 3072-bit RSA for protection beyond 2030


@dataclass(frozen=True, slots=True)
class RingEntry:
    kid: str
    alg: SigningAlg
    state: Literal["primary", "retiring"]
    created: int
    retire_after: int | None = None


@dataclass(frozen=True, slots=True)
class SigningKey:
    entry: RingEntry
    key: ECKey | RSAKey

    @property
    def kid(self) -> str:
        return self.entry.kid

    @property
    def alg(self) -> SigningAlg:
        return self.entry.alg


def _generate(alg: SigningAlg) -> ECKey | RSAKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    return RSAKey.generate_key(RSA_KEY_BITS, private=True)


def _import_private(pem: bytes, entry: RingEntry) -> ECKey | RSAKey:
    parameters: Any = {"kid": entry.kid, "alg": entry.alg, "use": "sig"}
    if entry.alg == "ES256":
        return ECKey.import_key(pem, parameters)
    return RSAKey.import_key(pem, parameters)


class SigningKeyRing:
    """Loads, rotates and serves the signing keys in ``<keys_dir>/signing``."""

    def __init__(self, keys_dir: Path, sealer: KekSealer | None = None) -> None:
        self._sealer = sealer  # None only for tests of the ring itself: files are then plain PEM
        self._dir = keys_dir / "signing"
        self._ring_file = self._dir / "ring.json"
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = []
        self._mtime = 0.0
        self._checked_at = 0.0
        self._jwks: dict[str, Any] = {"keys": []}

    # -- loading -----------------------------------------------------------------------

    def load_or_create(self) -> SigningKeyRing:
        """Load the ring, generating a primary key for each algorithm that lacks one."""
        with self._lock:
            entries = self._read_entries() if self._ring_file.exists() else []
            changed = False
            for alg in SUPPORTED_ALGORITHMS:
                if not any(e.alg == alg and e.state == "primary" for e in entries):
                    entries.append(self._create_key(alg))
                    changed = True
            if changed:
                self._write_entries(entries)
            self._load(entries)
        return self

    def _read_entries(self) -> list[RingEntry]:
        try:
            raw = json.loads(self._ring_file.read_text())
            return [RingEntry(**item) for item in raw["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"invalid key ring {self._ring_file}: {error}") from None

    def _write_entries(self, entries: list[RingEntry]) -> None:
        body = json.dumps({"keys": [asdict(e) for e in entries]}, indent=2).encode()
        write_private_file(self._ring_file, body)

    def _create_key(self, alg: SigningAlg) -> RingEntry:
        key = _generate(alg)
        entry = RingEntry(kid=key.thumbprint(), alg=alg, state="primary", created=int(time.time()))
        self._write_key(entry.kid, key.as_pem(private=True))
        return entry

    def _key_path(self, kid: str) -> Path:
        return self._dir / (f"{kid}.sealed" if self._sealer else f"{kid}.pem")

    def _write_key(self, kid: str, pem: bytes) -> None:
        data = self._sealer.seal(pem, f"signing/{kid}") if self._sealer else pem
        write_private_file(self._key_path(kid), data)

    def _read_key(self, kid: str) -> bytes:
        data = self._key_path(kid).read_bytes()
        return self._sealer.open(data, f"signing/{kid}") if self._sealer else data

    def _load(self, entries: list[RingEntry]) -> None:
        keys = []
        for entry in entries:
            try:
                keys.append(SigningKey(entry, _import_private(self._read_key(entry.kid), entry)))
            except (OSError, ValueError, JoseError, VaultError) as error:
                raise ConfigError(f"invalid signing key {self._key_path(entry.kid)}: {error}") from None
        self._keys = keys
        self._mtime = self._ring_file.stat().st_mtime
        self._checked_at = time.monotonic()
        self._jwks = self._build_jwks()

    def _refresh_if_rotated(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < _RELOAD_CHECK_SECONDS:
            return
        with self._lock:
            self._checked_at = now
            try:
                mtime = self._ring_file.stat().st_mtime
            except OSError:
                return  # keep serving the keys we have; the operator sees the CLI error
            if mtime != self._mtime:
                self._load(self._read_entries())
            else:
                self._jwks = self._build_jwks()  # drop retired keys as time passes

    # -- use ---------------------------------------------------------------------------

    def _published(self) -> list[SigningKey]:
        now = time.time()
        return [
            k
            for k in self._keys
            if k.entry.state == "primary" or (k.entry.retire_after or 0) > now
        ]

    def _build_jwks(self) -> dict[str, Any]:
        return {"keys": [k.key.as_dict(private=False) for k in self._published()]}

    def primary(self, alg: SigningAlg) -> SigningKey:
        self._refresh_if_rotated()
        for key in self._keys:
            if key.alg == alg and key.entry.state == "primary":
                return key
        raise ConfigError(f"no primary signing key for {alg}")  # load_or_create prevents it

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set: every primary key and every retiring key still in use."""
        self._refresh_if_rotated()
        return self._jwks

    def verification_keys(self) -> KeySet:
        return KeySet([k.key for k in self._published()])

    def sign(self, claims: dict[str, Any], alg: SigningAlg) -> str:
        key = self.primary(alg)
        header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key.key, algorithms=[alg])

    def entries(self) -> list[RingEntry]:
        self._refresh_if_rotated()
        return [k.entry for k in self._keys]

    # -- sealing under the KEK ring -------------------------------------------------------

    def reseal(self) -> int:
        """Re-seal every signing key under the primary KEK (part of ``gateway keys rewrap``)."""
        if self._sealer is None:
            return 0
        with self._lock:
            for entry in self._read_entries():
                self._write_key(entry.kid, self._read_key(entry.kid))
        return len(self._keys)

    def count_sealed_under(self, kek_id: str) -> int:
        """How many signing key files a KEK still seals (retiring it must wait for zero)."""
        if self._sealer is None:
            return 0
        return sum(1 for entry in self._read_entries()
                   if KekSealer.kek_of(self._key_path(entry.kid).read_bytes()) == kek_id)

    # -- rotation ------------------------------------------------------------------------

    def rotate(self, alg: SigningAlg, overlap_seconds: int) -> RingEntry:
        """Make a new primary for ``alg``; the old one stays published ``overlap_seconds``.

        ``overlap_seconds`` must cover the longest life of anything the old key signed
        (the ID token lifetime), so that shops can still verify tokens already issued.
        Keys whose overlap has passed are removed from the ring and their files deleted.
        """
        with self._lock:
            now = int(time.time())
            kept: list[RingEntry] = []
            for entry in self._read_entries():
                if entry.alg == alg and entry.state == "primary":
                    entry = RingEntry(entry.kid, entry.alg, "retiring", entry.created,
                                      now + overlap_seconds)
                if entry.state == "retiring" and (entry.retire_after or 0) <= now:
                    self._key_path(entry.kid).unlink(missing_ok=True)
                    continue
                kept.append(entry)
            new_entry = self._create_key(alg)
            kept.append(new_entry)
            self._write_entries(kept)
            self._load(kept)
        return new_entry
