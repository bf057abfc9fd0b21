"""A refresh asked again with the same token gets the answer it got the first time.

Refresh tokens rotate: each works once, and a second use is a replay that ends the whole
family (RFC 9700 §4.14.2). But a shop whose reply was lost on the way (a timeout, a 503 after
the exchange was stored but before a replica confirmed it, a gateway worker that died
mid-answer, a Redis failover) can only ask again with the token it holds, and would lose
the person's sign-in. So, with ``refresh_repeat_seconds`` set (off by default: the strict
reading of RFC 9700), an exchange keeps its answer that long, sealed under a key derived
from the refresh token it used up; the same token presented again in that time, by the same
authenticated shop (and the same DPoP key when bound), while its grant is live, gets that
answer again instead of ending the family.

Why this is safe: Redis holds only the token's digest, so a copy of Redis cannot open the
answer; an attacker holding a stolen refresh token would also need the shop's client
credentials (or its DPoP key) and a window of seconds, and would receive tokens the shop
also holds, whose next rotation by either side ends the family as before. A repeat after
the window, or after the family's successor was itself used, is still a replay.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_INFO = b"consent-gateway refresh answer v1"
NONCE_BYTES = 12


def _key(refresh_token: str) -> AESGCM:
    # The refresh token carries 256 random bits: HKDF only shapes them into an AES key.
    return AESGCM(HKDF(hashes.SHA256(), 32, salt=None, info=KEY_INFO).derive(refresh_token.encode()))


def seal_answer(refresh_token: str, answer: dict[str, Any], now: float | None = None) -> bytes:
    """The token response, sealed under ``refresh_token`` (which used it up)."""
    nonce = os.urandom(NONCE_BYTES)
    plain = json.dumps({"at": int(time.time() if now is None else now), "answer": answer}).encode()
    return nonce + _key(refresh_token).encrypt(nonce, plain, KEY_INFO)


def open_answer(refresh_token: str, sealed: bytes, now: float | None = None) -> dict[str, Any] | None:
    """The answer again, its ``expires_in`` counted from now; None if it does not open."""
    try:
        plain = _key(refresh_token).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], KEY_INFO)
    except (InvalidTag, ValueError):
        return None
    kept = json.loads(plain)
    answer: dict[str, Any] = kept["answer"]
    if isinstance(answer.get("expires_in"), int):
        elapsed = int(time.time() if now is None else now) - int(kept["at"])
        answer["expires_in"] = max(0, answer["expires_in"] - elapsed)
    return answer
