"""Redis Cluster slots, and credentials that name their person's slot.

Redis Cluster places a key by the CRC16 of its hash tag (the text between the first ``{``
and ``}``) modulo 16384. Everything of one person carries the tag ``{p:<person>}`` and so
lives in one slot; the grant scripts (:mod:`gateway.store.grants`) check a code or token
against the person's grant generation in the same script that loads or writes it, so a
credential's key must live in that slot too, although the credential is looked up by
nothing but its own value.

A credential therefore carries a *slot hint*: ``<43 random base64url characters>.<4 hex
digits>``, the hex being the person's slot XOR a mask the gateway alone can compute (an
HMAC of the random part under a key derived from the pairwise secret). The key is named with
a tag that hashes to that slot (:func:`slot_tag`). The mask is there for privacy: without
it, every credential of a person would carry the same 14 bits at every shop, a handle two
shops could join their customers on; with it, each credential's hint looks random to anyone
but the gateway. Computing it is one HMAC-SHA-256 over 43 bytes per credential presented.

A value without a hint (minted before hints existed, or forged) is looked up under the
untagged key name it was stored under; on a single server or behind Sentinel that still
finds the old credentials, and on a cluster it finds nothing (no such key was ever written
there).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets
from functools import cache
from itertools import count

SLOTS = 16384
ROUTING_LABEL = b"consent-gateway credential slot hint v1"
_HINT_DIGITS = 4
_HEX = frozenset("0123456789abcdef")


def tag_slot(tag: str) -> int:
    """The slot of a key whose hash tag is ``tag`` (Redis: CRC16-XMODEM mod 16384)."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


def person_slot(person_id: str) -> int:
    """The slot of every ``{p:<person_id>}`` key (gateway/store/keys.py)."""
    return tag_slot(f"p:{person_id}")


@cache
def _slot_tags() -> tuple[str, ...]:
    """The shortest ``s<n>`` tag for every slot, found once per process (about 170,000 CRCs,
    some 50 ms): key names stay short and the same on every host."""
    tags: list[str | None] = [None] * SLOTS
    missing = SLOTS
    for n in count():
        tag = f"s{n:x}"
        slot = tag_slot(tag)
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
            if not missing:
                return tuple(t for t in tags if t is not None)
    raise AssertionError("unreachable")


def slot_tag(slot: int) -> str:
    """A hash tag whose keys land in ``slot``."""
    return _slot_tags()[slot]


class CredentialRouting:
    """Mints credentials with a masked slot hint and reads the hint back."""

    def __init__(self, secret: bytes) -> None:
        self._mask_key = hmac.new(secret, ROUTING_LABEL, hashlib.sha256).digest()
        _slot_tags()  # built with the app, not on its first sign-in

    def mint(self, person_id: str) -> str:
        """A new 256-bit credential for ``person_id``, its key routed to the person's slot."""
        body = secrets.token_urlsafe(32)
        return f"{body}.{person_slot(person_id) ^ self._mask(body):0{_HINT_DIGITS}x}"

    def tag_of(self, credential: str) -> str | None:
        """The hash tag of the credential's key, or None when it carries no hint."""
        body, dot, hint = credential.rpartition(".")
        if not dot or len(hint) != _HINT_DIGITS or not _HEX.issuperset(hint):
            return None
        slot = int(hint, 16) ^ self._mask(body)
        return slot_tag(slot) if slot < SLOTS else None

    def _mask(self, body: str) -> int:
        return int.from_bytes(hmac.new(self._mask_key, body.encode(), hashlib.sha256).digest()[:2]) % SLOTS
