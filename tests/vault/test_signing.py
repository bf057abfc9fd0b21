"""The signing key ring: generated once, private files 0600, rotation with overlap."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from joserfc import jwt

from gateway.vault import SigningKeyRing


def test_first_start_generates_es256_and_rs256_keys_with_private_files(tmp_path: Path) -> None:
    ring = SigningKeyRing(tmp_path).load_or_create()
    algs = {entry.alg for entry in ring.entries()}
    assert algs == {"ES256", "RS256"}
    for pem in (tmp_path / "signing").glob("*.pem"):
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    again = SigningKeyRing(tmp_path).load_or_create()
    assert [e.kid for e in again.entries()] == [e.kid for e in ring.entries()]


def test_signed_token_verifies_against_the_jwks(tmp_path: Path) -> None:
    ring = SigningKeyRing(tmp_path).load_or_create()
    token = ring.sign({"sub": "x"}, "ES256")
    decoded = jwt.decode(token, ring.verification_keys(), algorithms=["ES256"])
    assert decoded.header["kid"] == ring.primary("ES256").kid


def test_rotation_keeps_the_old_key_published_until_its_tokens_expire(tmp_path: Path) -> None:
    ring = SigningKeyRing(tmp_path).load_or_create()
    old = ring.primary("ES256")
    old_token = ring.sign({"sub": "x"}, "ES256")
    new = ring.rotate("ES256", overlap_seconds=3600)
    assert new.kid != old.kid
    published = {k["kid"] for k in ring.jwks()["keys"]}
    assert {old.kid, new.kid} <= published
    jwt.decode(old_token, ring.verification_keys(), algorithms=["ES256"])
    assert ring.primary("ES256").kid == new.kid


def test_expired_retiring_key_leaves_the_jwks_and_the_disk(tmp_path: Path) -> None:
    ring = SigningKeyRing(tmp_path).load_or_create()
    old = ring.primary("ES256")
    ring.rotate("ES256", overlap_seconds=0)
    time.sleep(0.01)
    ring.rotate("ES256", overlap_seconds=3600)  # prunes retired keys
    assert old.kid not in {k["kid"] for k in ring.jwks()["keys"]}
    assert not (tmp_path / "signing" / f"{old.kid}.pem").exists()


def test_another_process_rotation_is_picked_up(tmp_path: Path, monkeypatch: object) -> None:
    serving = SigningKeyRing(tmp_path).load_or_create()
    operator = SigningKeyRing(tmp_path).load_or_create()
    new = operator.rotate("ES256", overlap_seconds=60)
    serving._checked_at = 0.0  # pretend the reload interval has passed
    assert serving.primary("ES256").kid == new.kid


def test_signing_keys_are_sealed_under_the_kek_ring(tmp_path: Path) -> None:
    import secrets

    import pytest

    from gateway.errors import ConfigError
    from gateway.vault import KeyRing, load_master_key
    from gateway.vault.sealing import KekSealer

    master = load_master_key(secrets.token_hex(32), None)
    kek_ring = KeyRing.init(tmp_path, master)
    ring = SigningKeyRing(tmp_path, KekSealer(kek_ring)).load_or_create()
    files = list((tmp_path / "signing").glob("*.sealed"))
    assert len(files) == 2 and not list((tmp_path / "signing").glob("*.pem"))
    assert all(b"PRIVATE KEY" not in f.read_bytes() for f in files)
    token = ring.sign({"sub": "x"}, "ES256")

    old = kek_ring.entries()[0].kek_id
    kek_ring.rotate()
    assert ring.count_sealed_under(old) == 2
    ring.reseal()
    assert ring.count_sealed_under(old) == 0
    again = SigningKeyRing(tmp_path, KekSealer(kek_ring)).load_or_create()
    jwt.decode(token, again.verification_keys(), algorithms=["ES256"])

    wrong = KeyRing.load(tmp_path, master)
    moved = files[0].read_bytes()
    (tmp_path / "signing" / files[1].name).write_bytes(moved)  # a sealed file moved to another kid
    with pytest.raises(ConfigError, match="invalid signing key"):
        SigningKeyRing(tmp_path, KekSealer(wrong)).load_or_create()
