"""C2SP signed notes and checkpoints: published vectors, signing rules, and the key file."""

from __future__ import annotations

import base64
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import (
    Checkpoint,
    CheckpointError,
    NoteSigner,
    NoteVerifier,
    load_audit_keys,
    open_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)
from gateway.audit.keyfile import KEY_FILE
from gateway.audit.note import key_id

# c2sp.org/signed-note's example key, and a note it signed (also in Go's sumdb/note tests).
EXAMPLE_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
EXAMPLE_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHj"
    "G1Yu72IneyaQM=\n"
)
# golang.org/x/mod/sumdb/note's example: a private key and the signature it must produce.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_TEXT = ("If you think cryptography is the answer to your problem,\n"
              "then you don't know what your problem is.\n")
PETER_SIG = ("\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngot"
             "pRZb6KE6RyyBwJnAM=\n")


def peter_signer() -> NoteSigner:
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def test_c2sp_example_key_has_key_id_530d903a() -> None:
    verifier = NoteVerifier.from_string(EXAMPLE_VKEY)
    assert verifier.key_id.hex() == "530d903a"
    assert key_id("example.com/foo", verifier.public_key).hex() == "530d903a"
    assert verifier.to_string() == EXAMPLE_VKEY


def test_c2sp_example_note_verifies() -> None:
    opened = open_note(EXAMPLE_NOTE, [NoteVerifier.from_string(EXAMPLE_VKEY)])
    assert opened.text == "This is an example message.\n"


def test_signing_reproduces_the_go_sumdb_note_vector() -> None:
    signer = peter_signer()
    assert signer.verifier.to_string() == PETER_VKEY
    assert sign_note(PETER_TEXT, [signer]) == PETER_TEXT + "\n" + PETER_SIG


def test_verifier_key_with_a_wrong_id_is_refused() -> None:
    with pytest.raises(CheckpointError, match="key id"):
        NoteVerifier.from_string(EXAMPLE_VKEY.replace("530d903a", "530d903b"))


def test_unknown_signatures_are_ignored_when_a_known_key_signed() -> None:
    stranger = NoteSigner("witness.example", Ed25519PrivateKey.generate())
    note = sign_note(PETER_TEXT, [stranger, peter_signer()])
    assert open_note(note, [NoteVerifier.from_string(PETER_VKEY)]).text == PETER_TEXT


def test_a_note_signed_by_no_known_key_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="no trusted key"):
        open_note(EXAMPLE_NOTE, [NoteVerifier.from_string(PETER_VKEY)])


def test_a_note_without_trusted_keys_is_rejected() -> None:
    with pytest.raises(CheckpointError, match="no trusted key"):
        open_note(EXAMPLE_NOTE, [])


def test_a_failing_signature_from_a_known_key_rejects_the_note() -> None:
    altered = EXAMPLE_NOTE.replace("example message", "exemplary message")
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(altered, [NoteVerifier.from_string(EXAMPLE_VKEY)])


@pytest.mark.parametrize("note", [
    "no blank line\n\u2014 example.com/foo AAAA\n",
    "text\n\n- example.com/foo Uw2QOkn8\n",                  # hyphen, not an em dash
    "text\n\n\u2014 example.com/foo not base64!\n",
    "text\n\n\u2014 example.com/foo AAAA\n",                 # shorter than a key id
    "text\t\n\n\u2014 example.com/foo Uw2QOkn8srV1\n",       # control character
    "text\n\n",
])
def test_malformed_notes_are_rejected(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_note(note, [NoteVerifier.from_string(EXAMPLE_VKEY)])


def test_checkpoint_body_is_origin_size_and_base64_root() -> None:
    checkpoint = Checkpoint("gateway.test/audit", 20852163, bytes(range(32)))
    assert checkpoint.text() == (
        "gateway.test/audit\n20852163\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n")
    assert Checkpoint.parse(checkpoint.text()) == checkpoint


def test_signed_checkpoint_is_a_note_with_an_em_dash_signature_line() -> None:
    signer = NoteSigner("gateway.test/audit", Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint("gateway.test/audit", 3, bytes(32)), signer)
    body, _, signature = note.partition("\n\n")
    assert body.count("\n") == 2 and signature.startswith("\u2014 gateway.test/audit ")
    blob = base64.b64decode(signature.split(" ")[2])
    assert blob[:4] == signer.verifier.key_id and len(blob) == 4 + 64
    assert verify_checkpoint(note, [signer.verifier], "gateway.test/audit").size == 3


def test_checkpoint_for_another_origin_is_rejected() -> None:
    signer = NoteSigner("other.example/log", Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint("other.example/log", 1, bytes(32)), signer)
    with pytest.raises(CheckpointError, match=r"not 'gateway\.test/audit'"):
        verify_checkpoint(note, [signer.verifier], "gateway.test/audit")


@pytest.mark.parametrize("text", [
    "origin\n007\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",   # leading zeros
    "origin\n7\nAAEC\n",                                             # not 32 bytes
    "origin\n7\n",                                                   # no root
    "origin\n7\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\nx\n",  # empty extension line
])
def test_malformed_checkpoint_text_is_rejected(text: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)


def test_audit_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_audit_keys(tmp_path, "gateway.test/audit")
    second = load_audit_keys(tmp_path, "gateway.test/audit")
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.signer.verifier == second.signer.verifier and first.mac_key == second.mac_key
    assert "mac_key" not in repr(first) and "private" not in repr(first.signer).lower()


def test_processes_starting_together_share_one_audit_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: load_audit_keys(tmp_path, "o.example/a"), range(16)))
    assert len({k.signer.verifier.public_key for k in keys}) == 1
    assert [p.name for p in (tmp_path / "audit").iterdir()] == ["checkpoint.ed25519.pem"]
