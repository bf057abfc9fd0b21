"""What the OpenID provider needs from the rest of the gateway, gathered in one object."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from gateway.audit import AuditError, AuditEvent, AuditService
from gateway.audit.events import Action, ActorType, Outcome
from gateway.audit.relay import OutboxRelay
from gateway.config import Settings
from gateway.consent import ConsentRecord, ConsentService
from gateway.oidc.clients import Shop, ShopRegistry
from gateway.oidc.pairwise import pairwise_subject
from gateway.oidc.sessions import LoginSessions, PendingRequests
from gateway.oidc.tokens import TokenService
from gateway.policy import Catalogue
from gateway.store import Store
from gateway.telemetry import REQUEST_ID
from gateway.upstream import IdentityService
from gateway.vault import SigningKeyRing
from gateway.vault.profiles import SealedProfiles

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProviderContext:
    settings: Settings
    store: Store
    signing_keys: SigningKeyRing
    shops: ShopRegistry
    tokens: TokenService
    sessions: LoginSessions
    pending: PendingRequests
    consents: ConsentService
    identities: IdentityService
    pairwise_secret: bytes
    catalogue: Catalogue
    pseudonym_secret: bytes
    profiles: SealedProfiles
    audit: AuditService
    relay: OutboxRelay

    def event(self, action: Action, *, actor_type: ActorType = "shop", actor_id: str | None = None,
              person: str | None = None, shop: str | None = None, fields: Iterable[str] = (),
              purposes: Iterable[str] = (), policy_version: int | None = None,
              outcome: Outcome = "success") -> AuditEvent:
        """The audit event of this request for ``action``."""
        purpose = "+".join(sorted(set(purposes))) or None
        return AuditEvent(
            actor_type=actor_type, actor_id=actor_id or shop or "gateway", action=action,
            person=person, shop=shop, fields=tuple(fields), purpose=purpose,
            policy_version=str(policy_version) if policy_version is not None else None,
            outcome=outcome, request_id=REQUEST_ID.get(),
        )

    def record(self, action: Action, *, actor_type: ActorType = "shop", actor_id: str | None = None,
               person: str | None = None, shop: str | None = None, fields: Iterable[str] = (),
               purposes: Iterable[str] = (), policy_version: int | None = None,
               outcome: Outcome = "success") -> None:
        """Append one audit event (one Redis round trip). Raises if it cannot be recorded: the
        caller must then not release data (the app answers 503)."""
        self.audit.record(self.event(
            action, actor_type=actor_type, actor_id=actor_id, person=person, shop=shop,
            fields=fields, purposes=purposes, policy_version=policy_version, outcome=outcome))

    def relay_staged(self, person_id: str) -> None:
        """Relay the events a state change staged in the person's outbox. If the log cannot
        take them now, they stay staged: the change is done and its events are safe, and the
        background relay appends them later (and releases wait for it, see userinfo)."""
        try:
            self.relay.flush(person_id)
        except (AuditError, redis.RedisError) as error:
            log.warning("audit events staged for the relay", extra={"reason": type(error).__name__})

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    def endpoint(self, path: str) -> str:
        return f"{self.settings.issuer}{path}"

    def subject_for(self, shop: Shop, person_id: str) -> str:
        return pairwise_subject(self.pairwise_secret, shop.sector, person_id)

    def shop_key(self, shop_id: str) -> bytes:
        """The key a shop's pseudonyms and relay aliases are made with: one per shop, so two
        shops can never join their customers on them."""
        return hmac.new(self.pseudonym_secret, f"shop\x00{shop_id}".encode(), hashlib.sha256).digest()

    def release_state(
        self, person_id: str, client_id: str, generation: int
    ) -> tuple[dict[str, Any], ConsentRecord | None] | None:
        """A person's profile and their consent record for one shop, read in one transaction
        with the grant generation; None if the grant is no longer the one the token was
        issued under (withdrawn, narrowed or erased since the token was loaded). One round
        trip (userinfo's hot path; opening the profile needs no more while the data key is
        cached). Events of a consent change still staged are relayed first, so that nothing
        is released before the consent it rests on is on record (raises if they cannot be)."""
        keys = self.store.keys
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.get(keys.person_grant(person_id, client_id))
        pipe.get(keys.person_consent(person_id, client_id))
        pipe.hlen(keys.person_outbox(person_id))
        self.profiles.queue_read(pipe, person_id)
        replies = pipe.execute()
        current, raw_consent, staged = replies[0], replies[1], replies[2]
        if current is None or int(current) != generation:
            return None
        if staged:
            self.relay.flush(person_id)
        profile = self.profiles.open_replies(person_id, replies[3:3 + self.profiles.READ_COMMANDS])
        return profile, ConsentRecord.from_stored(raw_consent) if raw_consent else None

    @property
    def relay_domain(self) -> str:
        return self.settings.relay_email_domain or f"relay.{urlsplit(self.settings.issuer).hostname}"
