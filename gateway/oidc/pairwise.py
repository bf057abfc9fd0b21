"""Pairwise subject identifiers (OIDC Core §8.1).

``sub = base64url(HMAC-SHA256(secret, sector || 0x00 || person_id))``: stable for one shop,
different for every sector, and not reversible without the gateway's secret
(``keys/pairwise.key``). The sector is the shop itself unless it names a verified
``sector_identifier_uri`` (gateway/oidc/sectors.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def pairwise_subject(secret: bytes, sector: str, person_id: str) -> str:
    mac = hmac.new(secret, f"{sector}\x00{person_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
