"""Turning an upstream identity into the gateway's own person.

A person is found again by a keyed digest of (provider, provider subject), so signing in
twice through the same provider gives the same person, and Redis never holds the raw
openid or user id. Linking a second provider to an existing person is an explicit step
(:meth:`IdentityService.link`), never a guess from matching e-mail addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

from gateway.store import Store
from gateway.upstream.base import UpstreamIdentity


class IdentityService:
    def __init__(self, store: Store, link_secret: bytes) -> None:
        self._store = store
        self._secret = link_secret

    def _link_key(self, identity: UpstreamIdentity) -> str:
        mac = hmac.new(
            self._secret, f"{identity.provider_id}\x00{identity.subject}".encode(), hashlib.sha256
        ).hexdigest()
        return self._store.keys.person_link(identity.provider_id, mac)

    def resolve(self, identity: UpstreamIdentity) -> str:
        """Return the person id for this identity, creating the person on first sign-in,
        and store the profile the provider gave this time."""
        link_key = self._link_key(identity)
        candidate = secrets.token_hex(16)
        # SET NX: two simultaneous first sign-ins of one person agree on one id.
        self._store.redis.set(link_key, candidate, nx=True)
        person_id = (self._store.get(link_key) or candidate.encode()).decode()
        self.save_profile(person_id, identity.profile)
        return person_id

    def link(self, person_id: str, identity: UpstreamIdentity) -> bool:
        """Attach another provider's identity to ``person_id``; False if it belongs to someone."""
        return bool(self._store.redis.set(self._link_key(identity), person_id, nx=True))

    def save_profile(self, person_id: str, profile: dict[str, object]) -> None:
        self._store.redis.set(self._store.keys.person_profile(person_id), json.dumps(profile))

    def profile(self, person_id: str) -> dict[str, object]:
        raw = self._store.get(self._store.keys.person_profile(person_id))
        return dict(json.loads(raw)) if raw else {}
