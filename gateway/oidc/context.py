"""What the OpenID provider needs from the rest of the gateway, gathered in one object."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Settings
from gateway.consent import ConsentService
from gateway.oidc.clients import Shop, ShopRegistry
from gateway.oidc.pairwise import pairwise_subject
from gateway.oidc.sessions import LoginSessions, PendingRequests
from gateway.oidc.tokens import TokenService
from gateway.store import Store
from gateway.upstream import IdentityService
from gateway.vault import SigningKeyRing


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

    @property
    def issuer(self) -> str:
        return self.settings.issuer

    def endpoint(self, path: str) -> str:
        return f"{self.settings.issuer}{path}"

    def subject_for(self, shop: Shop, person_id: str) -> str:
        return pairwise_subject(self.pairwise_secret, shop.config.sector, person_id)
