"""What the OpenID provider needs from the rest of the gateway, gathered in one object."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.audit import AuditEvent, AuditService
from gateway.audit.events import Action, ActorType, Outcome
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

    def record(self, action: Action, *, actor_type: ActorType = "shop", actor_id: str | None = None,
               person: str | None = None, shop: str | None = None, fields: Iterable[str] = (),
               purposes: Iterable[str] = (), policy_version: int | None = None,
               outcome: Outcome = "success") -> None:
        """Append one audit event (one Redis round trip). Raises if it cannot be recorded: the
        caller must then not release data (the app answers 503)."""
        purpose = "+".join(sorted(set(purposes))) or None
        self.audit.record(AuditEvent(
            actor_type=actor_type, actor_id=actor_id or shop or "gateway", action=action,
            person=person, shop=shop, fields=tuple(fields), purpose=purpose,
            policy_version=str(policy_version) if policy_version is not None else None,
            outcome=outcome, request_id=REQUEST_ID.get(),
        ))

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    def endpoint(self, path: str) -> str:
        return f"{self.settings.issuer}{path}"

    def subject_for(self, shop: Shop, person_id: str) -> str:
        return pairwise_subject(self.pairwise_secret, shop.config.sector, person_id)

    def shop_key(self, shop_id: str) -> bytes:
        """The key a shop's pseudonyms and relay aliases are made with: one per shop, so two
        shops can never join their customers on them."""
        return hmac.new(self.pseudonym_secret, f"shop\x00{shop_id}".encode(), hashlib.sha256).digest()

    def profile_and_consent(
        self, person_id: str, client_id: str
    ) -> tuple[dict[str, Any], ConsentRecord | None]:
        """A person's profile and their consent record for one shop, in one round trip
        (userinfo's hot path; opening the profile needs no more while the data key is cached)."""
        pipe = self.store.redis.pipeline(transaction=False)
        self.profiles.queue_read(pipe, person_id)
        pipe.get(self.store.keys.person_consent(person_id, client_id))
        raw_profile, raw_consent = pipe.execute()
        profile = self.profiles.open(person_id, raw_profile)
        return profile, ConsentRecord.from_json(raw_consent) if raw_consent else None

    @property
    def relay_domain(self) -> str:
        return self.settings.relay_email_domain or f"relay.{urlsplit(self.settings.issuer).hostname}"
