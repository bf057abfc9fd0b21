"""The stored form of one log entry, and the checks every reader of the log applies to it.

Layout (bytes): ``prev (32) || nonce (16) || tag (16) || canonical event``.

- ``prev`` is the leaf hash of the entry before (32 zero bytes for entry 0). The append script
  copies it from the log's head *inside* the same atomic step that assigns the index, so the
  link records the order Redis actually serialised, across every process.
- ``tag`` is HMAC-SHA256(entry MAC key, domain || nonce || event), truncated to 128 bits
  (RFC 2104 §5 allows truncating to half the hash length). The appender computes it before
  the round trip; only holders of ``keys/audit`` can produce it. The random ``nonce`` makes
  every tag unique even for two identical events, so a copy of a genuine entry is recognised
  as a repeat.

Only the event is the Merkle leaf (RFC 9162 §2.1.1); prev, nonce and tag are envelope.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from gateway.audit.events import NonCanonicalEvent, decode_event
from gateway.audit.merkle import HASH_SIZE, leaf_hash

NONCE_SIZE = 16
TAG_SIZE = 16
HEADER_SIZE = HASH_SIZE + NONCE_SIZE + TAG_SIZE
ZERO_HASH = bytes(HASH_SIZE)
_MAC_DOMAIN = b"consent-gateway/audit-entry/1\x00"


def entry_tag(mac_key: bytes, nonce: bytes, event: bytes) -> bytes:
    return hmac.new(mac_key, _MAC_DOMAIN + nonce + event, hashlib.sha256).digest()[:TAG_SIZE]


def new_tail(mac_key: bytes, event: bytes) -> bytes:
    """``nonce || tag || event``: what the appender sends; the script puts ``prev`` in front."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    return nonce + entry_tag(mac_key, nonce, event) + event


@dataclass(frozen=True, slots=True)
class StoredEntry:
    index: int
    prev: bytes
    nonce: bytes
    tag: bytes
    event: bytes

    @classmethod
    def parse(cls, index: int, raw: bytes) -> StoredEntry:
        if len(raw) <= HEADER_SIZE:
            raise ValueError("record too short")
        nonce_end = HASH_SIZE + NONCE_SIZE
        return cls(index, raw[:HASH_SIZE], raw[HASH_SIZE:nonce_end], raw[nonce_end:HEADER_SIZE],
                   raw[HEADER_SIZE:])

    def leaf_hash(self) -> bytes:
        return leaf_hash(self.event)


def check_entry(entry: StoredEntry, mac_key: bytes | None) -> str | None:
    """Why this entry on its own cannot be genuine, or ``None``. (Links are checked by callers.)"""
    try:
        decode_event(entry.event)
    except NonCanonicalEvent as error:
        return f"stored event is {error}"
    if mac_key is not None and not hmac.compare_digest(
        entry.tag, entry_tag(mac_key, entry.nonce, entry.event)
    ):
        return "entry MAC does not verify: the entry was altered, or not written by this gateway"
    return None


def read_entry(index: int, raw: bytes | None) -> StoredEntry | str:
    """Parse a stored record, or say why it cannot be."""
    if raw is None:
        return "entry is missing"
    try:
        return StoredEntry.parse(index, raw)
    except ValueError:
        return "entry record is truncated"
