"""Turning an upstream identity into the gateway's own person.

A person is found again by a keyed digest of (namespace, provider subject), so signing in
twice through the same provider gives the same person, and Redis never holds the raw
openid or user id. The namespace is the provider id, except for identifiers that several
apps share (a WeChat unionid, an Alipay user_id), which use a namespace of their own.
Linking a second provider to an existing person is an explicit step
(:meth:`IdentityService.link`, docs/providers.md), never a guess from matching e-mail
addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import cast

from gateway.store import Store
from gateway.upstream.base import UpstreamIdentity
from gateway.upstream.links import LinkIndex
from gateway.vault.profiles import SealedProfiles


class IdentityService:
    def __init__(self, store: Store, link_secret: bytes, profiles: SealedProfiles) -> None:
        self._store = store
        self._secret = link_secret
        self._profiles = profiles
        self._links = LinkIndex(store.redis, store.keys)

    def _key(self, namespace: str, subject: str) -> str:
        mac = hmac.new(self._secret, f"{namespace}\x00{subject}".encode(), hashlib.sha256).hexdigest()
        return self._store.keys.person_link(namespace, mac)

    def _link_key(self, identity: UpstreamIdentity) -> str:
        return self._key(identity.key_namespace, identity.subject)

    def resolve(self, identity: UpstreamIdentity) -> str:
        """Return the person id for this identity, creating the person on first sign-in,
        and store the profile the provider gave this time.

        The strongest identifier decides; if it is new but a weaker one seen in the same
        sign-in is known (an openid from an earlier ``snsapi_base`` sign-in, now arriving
        with its unionid), that person is found again. Every identifier of this sign-in is
        then linked to the person, never taken from another person.
        """
        link_key = self._link_key(identity)
        alias_keys = [self._key(namespace, subject) for namespace, subject in identity.also_known_as]
        for _ in range(2):
            # One GET per link in one pipeline, not MGET: the link keys are named by the
            # provider's subject and lie in different Redis Cluster slots.
            reads = self._store.pipeline()
            for key in (link_key, *alias_keys):
                reads.get(key)
            known = cast(list[bytes | None], reads.execute())
            found = next((value for value in known if value), None)
            candidate = found.decode() if isinstance(found, bytes) else secrets.token_hex(16)
            # SET NX: two simultaneous first sign-ins of one person agree on one id.
            self._store.redis.set(link_key, candidate, nx=True)
            person_id = (self._store.get(link_key) or candidate.encode()).decode()
            pipe = self._store.redis.pipeline(transaction=False)
            for alias_key in alias_keys:
                pipe.set(alias_key, person_id, nx=True)
            # Remember the person's links so that erasure can forget them (a later sign-in is
            # then a new person).
            self._links.queue_add(pipe, person_id, [link_key, *alias_keys])
            pipe.exists(self._store.keys.person_erased(person_id))
            if not pipe.execute()[-1]:
                break
            # An erasure of this person ended before its links were forgotten: finish that
            # now, and this sign-in is a new person.
            self.forget(person_id)
        else:
            raise RuntimeError("sign-in kept resolving to an erased person")
        if identity.has_profile:
            self.save_profile(person_id, identity.profile)
        return person_id

    def link(self, person_id: str, identity: UpstreamIdentity) -> bool:
        """Attach another provider's identity to ``person_id``; False if it belongs to someone."""
        link_key = self._link_key(identity)
        if not self._store.redis.set(link_key, person_id, nx=True):
            return self._store.get(link_key) == person_id.encode()  # already this person's
        alias_keys = [self._key(namespace, subject) for namespace, subject in identity.also_known_as]
        pipe = self._store.redis.pipeline(transaction=False)
        for alias_key in alias_keys:
            pipe.set(alias_key, person_id, nx=True)
        self._links.queue_add(pipe, person_id, [link_key, *alias_keys])
        pipe.execute()
        return True

    def forget(self, person_id: str) -> None:
        """Remove every provider link of the person (erasure)."""
        links = self._links.link_keys(person_id)
        self._store.redis.delete(self._store.keys.person_links(person_id), *links)

    def save_profile(self, person_id: str, profile: dict[str, object]) -> None:
        self._profiles.save(person_id, profile)  # sealed: nothing personal in clear

    def profile(self, person_id: str) -> dict[str, object]:
        return self._profiles.load(person_id)
