"""The person's side: what they granted to whom, withdrawal, their data, erasure.

Withdrawal and erasure take effect at once: the shop's tokens for the person are revoked
(so the next userinfo call fails), and the consent records say what was withdrawn and when.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from gateway.consent import ConsentRecord, Grant
from gateway.oidc.clients import Shop
from gateway.oidc.context import ProviderContext


@dataclass(frozen=True, slots=True)
class ShopConsent:
    shop: Shop
    record: ConsentRecord

    def live_grants(self, now: float) -> list[Grant]:
        return [g for g in self.record.grants if g.expires_at > now]


class AccountService:
    def __init__(self, ctx: ProviderContext) -> None:
        self.ctx = ctx

    def consents(self, person_id: str) -> list[ShopConsent]:
        """Every shop the person decided something for, in one round trip."""
        shops = list(self.ctx.shops)
        pipe = self.ctx.store.redis.pipeline(transaction=False)
        for shop in shops:
            pipe.get(self.ctx.store.keys.person_consent(person_id, shop.client_id))
        result = []
        for shop, raw in zip(shops, pipe.execute(), strict=True):
            if raw is not None:
                result.append(ShopConsent(shop, ConsentRecord.from_json(raw)))
        return result

    def withdraw(self, person_id: str, client_id: str, purpose: str | None = None,
                 field: str | None = None) -> list[Grant]:
        """Withdraw, then revoke the shop's tokens for this person so nothing is cached away."""
        withdrawn = self.ctx.consents.withdraw(person_id, client_id, purpose, field)
        if withdrawn:
            shop = self.ctx.shops.get(client_id)
            self.ctx.record("consent_withdrawn", actor_type="person", actor_id=person_id,
                            person=person_id, shop=client_id, fields=[g.field for g in withdrawn],
                            purposes=[g.purpose for g in withdrawn],
                            policy_version=shop.config.policy.version if shop else None)
            if self.ctx.tokens.revoke_person_shop(person_id, client_id):
                self.ctx.record("token_revoked", actor_type="person", actor_id=person_id,
                                person=person_id, shop=client_id)
        return withdrawn

    def erase(self, person_id: str) -> None:
        """Erase the person: every shop's tokens, every consent record, the profile. The
        audit event stays (pseudonymous id, no values): the log outlives what it records."""
        self.ctx.record("person_erased", actor_type="person", actor_id=person_id, person=person_id)
        for shop in self.ctx.shops:
            self.ctx.tokens.revoke_person_shop(person_id, shop.client_id)
        self.ctx.profiles.erase(person_id)  # crypto-shredding: the data key is destroyed
        self.ctx.identities.forget(person_id)  # the next sign-in is a new person
        keys = self.ctx.store.keys
        self.ctx.store.redis.delete(
            *(keys.person_consent(person_id, shop.client_id) for shop in self.ctx.shops))

    def export(self, person_id: str) -> dict[str, Any]:
        """Everything the gateway holds about the person, readable (PIPL art. 45, GDPR art. 15/20)."""
        self.ctx.record("profile_exported", actor_type="person", actor_id=person_id, person=person_id)
        now = time.time()
        return {
            "format": "consent-gateway-export/1",
            "exported_at": int(now),
            "profile": self.ctx.identities.profile(person_id),
            "consents": [
                {
                    "shop": {"client_id": c.shop.client_id, "name": c.shop.config.name,
                             "contact": c.shop.config.contact},
                    "subject_at_shop": self.ctx.subject_for(c.shop, person_id),
                    "policy_version": c.record.policy_version,
                    "grants": [dataclasses.asdict(g) for g in c.record.grants],
                    "refusals": [dataclasses.asdict(r) for r in c.record.refusals],
                    "receipts": list(c.record.receipts),
                }
                for c in self.consents(person_id)
            ],
            # The person's own audit events (pseudonymous, field names only), newest first.
            "history": [{"index": logged.index, **logged.event.model_dump(mode="json")}
                        for logged in self.ctx.audit.query.latest_for_person(person_id, 10_000)],
        }

