"""tlog-proof files a person can take away and check offline with the log's published key."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import (
    AuditLog,
    Checkpointer,
    NoteSigner,
    NoteVerifier,
    ProofError,
    TlogProof,
    canonical_json,
    prove,
    prove_latest,
    verify_proof,
)
from tests.audit.factories import ORIGIN, fill, make_event


@pytest.fixture
def checkpointer(audit_log: AuditLog, make_checkpointer: Callable[..., Checkpointer]) -> Checkpointer:
    fill(audit_log, 21)
    return make_checkpointer()


def published_key(checkpointer: Checkpointer) -> list[NoteVerifier]:
    return [NoteVerifier.from_string(checkpointer.signer.verifier.to_string())]


def test_proof_text_follows_tlog_proof_v1(checkpointer: Checkpointer) -> None:
    proof = prove_latest(checkpointer, 9)
    lines = proof.to_text().split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1].startswith("extra ") and lines[2] == "index 9"
    path_end = lines.index("")
    assert path_end == 3 + len(proof.path) and all(len(base64.b64decode(h)) == 32 for h in lines[3:path_end])
    assert "\n".join(lines[path_end + 1 :]) == proof.checkpoint_note  # checkpoint verbatim
    assert TlogProof.parse(proof.to_text()) == proof


@pytest.mark.parametrize("index", [0, 7, 20])
def test_a_proof_verifies_offline_and_returns_the_event(checkpointer: Checkpointer, index: int) -> None:
    text = prove_latest(checkpointer, index).to_text()
    checkpoint, event = verify_proof(text, published_key(checkpointer), ORIGIN)
    assert checkpoint.size == 21 and event.request_id == f"req-{index}"


def test_a_proof_for_an_entry_after_the_latest_checkpoint_signs_a_new_one(
    audit_log: AuditLog, checkpointer: Checkpointer
) -> None:
    prove_latest(checkpointer, 3)
    audit_log.append_event(make_event(50))
    proof = prove_latest(checkpointer, 21)
    assert verify_proof(proof.to_text(), published_key(checkpointer), ORIGIN)[0].size == 22


def test_a_proof_checked_against_the_event_the_person_holds(checkpointer: Checkpointer) -> None:
    text = prove_latest(checkpointer, 4).to_text()
    verify_proof(text, published_key(checkpointer), ORIGIN, event=canonical_json(make_event(4)))
    with pytest.raises(ProofError, match="does not lead"):
        verify_proof(text, published_key(checkpointer), ORIGIN, event=canonical_json(make_event(5)))


def test_a_proof_whose_event_was_altered_fails(checkpointer: Checkpointer) -> None:
    proof = prove_latest(checkpointer, 4)
    assert proof.extra is not None
    altered = TlogProof(proof.index, proof.path, proof.checkpoint_note,
                        proof.extra.replace(b"userinfo_read", b"token_revoked"))
    with pytest.raises(ProofError):
        verify_proof(altered.to_text(), published_key(checkpointer), ORIGIN)


def test_a_proof_with_another_index_or_path_fails(checkpointer: Checkpointer) -> None:
    proof = prove_latest(checkpointer, 4)
    for altered in (TlogProof(5, proof.path, proof.checkpoint_note, proof.extra),
                    TlogProof(4, proof.path[::-1], proof.checkpoint_note, proof.extra)):
        with pytest.raises(ProofError):
            verify_proof(altered.to_text(), published_key(checkpointer), ORIGIN)


def test_a_proof_signed_by_another_key_fails(audit_log: AuditLog, checkpointer: Checkpointer) -> None:
    impostor = Checkpointer(audit_log, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()))
    signed = impostor.checkpoint()
    assert signed is not None
    with pytest.raises(ProofError, match="no trusted key"):
        verify_proof(prove(audit_log, 2, signed).to_text(), published_key(checkpointer), ORIGIN)


def test_a_proof_for_another_log_fails(checkpointer: Checkpointer) -> None:
    text = prove_latest(checkpointer, 2).to_text()
    with pytest.raises(ProofError, match=r"not 'elsewhere\.example/audit'"):
        verify_proof(text, published_key(checkpointer), "elsewhere.example/audit")


@pytest.mark.parametrize("text", [
    "c2sp.org/tlog-proof@v2\nindex 1\n\nx\n",
    "c2sp.org/tlog-proof@v1\nindex 01\n\nx\n",
    "c2sp.org/tlog-proof@v1\nindex 1\nnot-base64!\n\nx\n",
    "c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n\nx\n",
    "c2sp.org/tlog-proof@v1\nindex 1\n",
])
def test_malformed_proofs_are_rejected(text: str) -> None:
    with pytest.raises(ProofError):
        TlogProof.parse(text)


def test_a_checkpoint_that_does_not_cover_the_index_cannot_prove_it(checkpointer: Checkpointer) -> None:
    signed = checkpointer.checkpoint()
    assert signed is not None
    with pytest.raises(ProofError, match="does not cover"):
        prove(checkpointer.log, 21, signed)
