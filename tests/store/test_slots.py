"""Credentials carry a masked hint of their person's Redis Cluster slot (gateway/store/slots.py)."""

from __future__ import annotations

import secrets

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from gateway.store.keys import KeySpace
from gateway.store.slots import SLOTS, CredentialRouting, slot_tag, tag_slot

ROUTING = CredentialRouting(b"\x01" * 32)


def test_slots_are_computed_as_redis_cluster_computes_them() -> None:
    for tag in ("p:abc", "s0", "audit", "p:" + "x" * 40):
        assert tag_slot(tag) == key_slot(f"cg:{{{tag}}}:anything".encode())


def test_every_slot_has_a_short_tag_that_hashes_to_it() -> None:
    tags = [slot_tag(slot) for slot in range(SLOTS)]
    assert all(tag_slot(tag) == slot for slot, tag in enumerate(tags))
    assert max(map(len, tags)) <= 8


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=40))
def test_a_minted_credential_names_a_key_in_its_persons_slot(person_id: str) -> None:
    credential = ROUTING.mint(person_id)
    tag = ROUTING.tag_of(credential)
    assert tag is not None
    keys = KeySpace("cg:")
    grant = keys.person_grant(person_id, "shop")
    assert key_slot(keys.access_token("d", tag).encode()) == key_slot(grant.encode())


def test_the_hint_differs_between_credentials_of_one_person() -> None:
    """Unmasked, every credential of a person would carry the same 14 bits at every shop."""
    hints = {ROUTING.mint("one-person").rpartition(".")[2] for _ in range(64)}
    assert len(hints) > 50


def test_values_without_a_valid_hint_have_no_tag() -> None:
    body = secrets.token_urlsafe(32)
    for value in (body, f"{body}.", f"{body}.12", f"{body}.12345", f"{body}.zzzz", f"{body}.ffff", ""):
        assert ROUTING.tag_of(value) is None
    assert KeySpace("cg:").access_token("d", None) == "cg:at:d"  # as stored before hints
