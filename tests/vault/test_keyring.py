"""The key-encryption key ring: one sealed file, one primary, rotation and retirement."""

from __future__ import annotations

import json
import logging
import secrets
import stat
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.vault import (
    DevelopmentKeyRingError,
    KekState,
    KeyRing,
    KeyRingExistsError,
    KeyRingMissingError,
    KeyRingTamperedError,
    KeyStateError,
    MasterKey,
    MasterKeyMissingError,
    RetiredKeyError,
    UnknownKeyError,
    WrongMasterKeyError,
    load_key_ring,
)
from gateway.vault.ringfile import PLAIN_MAGIC, SEALED_MAGIC


def _flip(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


def test_init_writes_one_sealed_private_file_with_one_primary(ring: KeyRing, ring_dir: Path) -> None:
    path = KeyRing.path_in(ring_dir)
    data = path.read_bytes()
    assert data.startswith(SEALED_MAGIC + b"\x01")
    assert b"primary" not in data and b"material" not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [e.state for e in ring.entries()] == [KekState.PRIMARY]
    assert ring.sealed


def test_init_refuses_to_replace_an_existing_ring(ring: KeyRing, ring_dir: Path, master: MasterKey) -> None:
    before = KeyRing.path_in(ring_dir).read_bytes()
    with pytest.raises(KeyRingExistsError):
        KeyRing.init(ring_dir, master)
    assert KeyRing.path_in(ring_dir).read_bytes() == before


def test_load_with_the_same_master_key_gives_the_same_keys(ring: KeyRing, ring_dir: Path,
                                                          master: MasterKey) -> None:
    again = KeyRing.load(ring_dir, master)
    assert again.entries() == ring.entries()
    assert again.primary() == ring.primary()


def test_a_wrong_master_key_is_reported_as_such(ring: KeyRing, ring_dir: Path) -> None:
    with pytest.raises(WrongMasterKeyError, match="different master key"):
        KeyRing.load(ring_dir, MasterKey(secrets.token_bytes(32)))


def test_a_missing_master_key_is_reported_outside_demo_mode(ring: KeyRing, ring_dir: Path) -> None:
    with pytest.raises(MasterKeyMissingError, match="GATEWAY_MASTER_KEY"):
        KeyRing.load(ring_dir, None)
    with pytest.raises(MasterKeyMissingError):
        KeyRing.init(ring_dir / "other", None)


def test_a_sealed_ring_needs_its_master_key_even_in_demo_mode(ring: KeyRing, ring_dir: Path) -> None:
    with pytest.raises(MasterKeyMissingError, match="is sealed"):
        KeyRing.load(ring_dir, None, demo=True)


def test_a_missing_ring_is_reported(ring_dir: Path, master: MasterKey) -> None:
    with pytest.raises(KeyRingMissingError, match="gateway keys init"):
        KeyRing.load(ring_dir, master)


def test_every_single_byte_change_of_the_ring_file_is_refused(ring: KeyRing, ring_dir: Path,
                                                              master: MasterKey) -> None:
    path = KeyRing.path_in(ring_dir)
    original = path.read_bytes()
    for index in range(len(original)):
        path.write_bytes(original)
        _flip(path, index)
        expected: type[ConfigError] = WrongMasterKeyError if 5 <= index < 13 else KeyRingTamperedError
        with pytest.raises(expected) as caught:
            KeyRing.load(ring_dir, master)
        assert "\n" not in str(caught.value)


def test_a_truncated_ring_file_is_refused(ring: KeyRing, ring_dir: Path, master: MasterKey) -> None:
    path = KeyRing.path_in(ring_dir)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(KeyRingTamperedError):
        KeyRing.load(ring_dir, master)


# -- development rings ---------------------------------------------------------------


def test_demo_mode_without_a_master_key_writes_a_plain_ring_and_says_so(
    ring_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.vault")
    ring = KeyRing.init(ring_dir, None, demo=True)
    assert not ring.sealed
    assert KeyRing.path_in(ring_dir).read_bytes().startswith(PLAIN_MAGIC)
    assert "development key ring, not sealed" in caplog.text
    caplog.clear()
    assert not KeyRing.load(ring_dir, None, demo=True).sealed
    assert "development key ring, not sealed" in caplog.text


def test_a_plain_ring_is_refused_outside_demo_mode(ring_dir: Path, master: MasterKey) -> None:
    KeyRing.init(ring_dir, None, demo=True)
    with pytest.raises(DevelopmentKeyRingError, match="demo"):
        KeyRing.load(ring_dir, master)


def test_a_plain_ring_with_two_primaries_is_refused(ring_dir: Path) -> None:
    ring = KeyRing.init(ring_dir, None, demo=True)
    ring.rotate()
    path = KeyRing.path_in(ring_dir)
    document = json.loads(path.read_bytes()[5:])
    for key in document["keys"]:
        key["state"] = "primary"
    path.write_bytes(PLAIN_MAGIC + b"\x01" + json.dumps(document).encode())
    with pytest.raises(KeyRingTamperedError, match="exactly one primary"):
        KeyRing.load(ring_dir, None, demo=True)


def test_a_development_ring_can_be_sealed_for_production(ring_dir: Path, master: MasterKey) -> None:
    ring = KeyRing.init(ring_dir, None, demo=True)
    primary = ring.primary()
    ring.change_master_key(master)
    assert ring.sealed
    assert KeyRing.load(ring_dir, master).primary() == primary


def test_the_master_key_can_be_changed(ring: KeyRing, ring_dir: Path, master: MasterKey) -> None:
    new_master = MasterKey(secrets.token_bytes(32))
    primary = ring.primary()
    ring.change_master_key(new_master)
    assert KeyRing.load(ring_dir, new_master).primary() == primary
    with pytest.raises(WrongMasterKeyError):
        KeyRing.load(ring_dir, master)


def test_unsealing_is_refused_outside_demo_mode(ring: KeyRing) -> None:
    with pytest.raises(MasterKeyMissingError):
        ring.change_master_key(None)


def test_the_loader_creates_a_ring_only_when_asked(ring_dir: Path) -> None:
    with pytest.raises(KeyRingMissingError):
        load_key_ring(ring_dir, master_key=None, master_key_file=None, demo=True)
    ring = load_key_ring(ring_dir, master_key=None, master_key_file=None, demo=True, create_if_missing=True)
    again = load_key_ring(ring_dir, master_key=None, master_key_file=None, demo=True, create_if_missing=True)
    assert again.primary() == ring.primary()


def test_the_loader_takes_the_master_key_from_a_value_or_a_file(ring_dir: Path, tmp_path: Path) -> None:
    secret = secrets.token_bytes(32)
    load_key_ring(ring_dir, master_key=secret.hex(), master_key_file=None, demo=False, create_if_missing=True)
    (tmp_path / "master").write_bytes(secret)
    ring = load_key_ring(ring_dir, master_key=None, master_key_file=tmp_path / "master", demo=False)
    assert ring.sealed


# -- rotation and retirement ---------------------------------------------------------


def test_rotation_makes_a_new_primary_and_keeps_the_old_key_active(ring: KeyRing) -> None:
    old_id, old_material = ring.primary()
    new = ring.rotate()
    states = {e.kek_id: e.state for e in ring.entries()}
    assert states == {f"{old_id:08x}": KekState.ACTIVE, new.kek_id: KekState.PRIMARY}
    assert ring.primary()[0] == int(new.kek_id, 16)
    assert ring.material(old_id) == old_material
    assert all(len(e.kek_id) == 8 for e in ring.entries())


def test_another_process_sees_a_rotation_when_it_meets_the_new_key_id(
    ring: KeyRing, ring_dir: Path, master: MasterKey
) -> None:
    serving = KeyRing.load(ring_dir, master)
    new = ring.rotate()
    assert serving.material(int(new.kek_id, 16)) == ring.primary()[1]


def test_an_unknown_key_id_is_reported_with_the_id(ring: KeyRing) -> None:
    unknown = next(i for i in (1, 2) if i != ring.primary()[0])
    with pytest.raises(UnknownKeyError, match=f"{unknown:08x}"):
        ring.material(unknown)
    with pytest.raises(UnknownKeyError):
        ring.retire("nothex!!", lambda _: 0, grace_seconds=0)


def test_the_primary_cannot_be_retired(ring: KeyRing) -> None:
    primary = f"{ring.primary()[0]:08x}"
    with pytest.raises(KeyStateError, match="primary"):
        ring.retire(primary, lambda _: 0, grace_seconds=0)


def test_a_key_that_still_wraps_data_keys_cannot_be_retired(ring: KeyRing) -> None:
    old = f"{ring.primary()[0]:08x}"
    ring.rotate()
    with pytest.raises(KeyStateError, match="still wraps 3 data keys"):
        ring.retire(old, lambda kek_id: 3 if kek_id == old else 0, grace_seconds=0)
    assert {e.kek_id: e.state for e in ring.entries()}[old] is KekState.ACTIVE


def test_a_key_demoted_a_moment_ago_cannot_be_retired_yet(ring: KeyRing) -> None:
    old = f"{ring.primary()[0]:08x}"
    ring.rotate()
    with pytest.raises(KeyStateError, match="retry later"):
        ring.retire(old, lambda _: 0)


def test_a_retired_key_loses_its_material_but_stays_on_record(ring: KeyRing, ring_dir: Path,
                                                             master: MasterKey) -> None:
    old_id = ring.primary()[0]
    ring.rotate()
    info = ring.retire(f"{old_id:08x}", lambda _: 0, grace_seconds=0)
    assert info.state is KekState.RETIRED and info.retired is not None
    with pytest.raises(RetiredKeyError, match="retired"):
        ring.material(old_id)
    reloaded = KeyRing.load(ring_dir, master)
    with pytest.raises(RetiredKeyError):
        reloaded.material(old_id)
    assert ring.retire(f"{old_id:08x}", lambda _: 1, grace_seconds=0).state is KekState.RETIRED
