"""The person's side: what they granted to whom, withdrawal, their data, erasure.

Withdrawal and erasure take effect at once: the script that changes the consent also ends
the grant's generation, so every code and token the shop holds for the person stops working
in that step (gateway/store/grants.py), and the change's audit events are committed with it
(gateway/store/commits.py), then relayed into the log.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway.audit.relay import stage
from gateway.consent import ConsentRecord, Grant, ReceiptMismatchError, reissue
from gateway.oidc.clients import Shop
from gateway.oidc.context import ProviderContext
from gateway.store.commits import Staged

log = logging.getLogger(__name__)


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
        """Every shop that holds something of the person: a live grant, or tokens (a shop
        whose grants were all declined still receives the pairwise ``sub``). One round trip."""
        shops = list(self.ctx.shops)
        keys = self.ctx.store.keys
        pipe = self.ctx.store.redis.pipeline(transaction=False)
        for shop in shops:
            pipe.get(keys.person_consent(person_id, shop.client_id))
            pipe.exists(keys.person_shop_families(person_id, shop.client_id))
        replies = pipe.execute()
        now = time.time()
        result = []
        for shop, raw, tokens in zip(shops, replies[0::2], replies[1::2], strict=True):
            if raw is None:
                continue
            consent = ShopConsent(shop, ConsentRecord.from_stored(raw))
            if consent.live_grants(now) or (tokens and not consent.record.withdrawn_at):
                result.append(consent)
        return result

    def withdraw(self, person_id: str, client_id: str, purpose: str | None = None,
                 field: str | None = None) -> list[Grant]:
        """Withdraw: the consent change, the end of every token of the shop for the person and
        the audit events happen in one step; then the events are relayed into the log and the
        dead tokens' memory freed."""
        shop = self.ctx.shops.get(client_id)

        def describe(withdrawn: list[Grant]) -> tuple[list[Staged], Staged | None]:
            withdrawal = self.ctx.event(
                "consent_withdrawn", actor_type="person", actor_id=person_id, person=person_id,
                shop=client_id, fields=[g.field for g in withdrawn],
                purposes=[g.purpose for g in withdrawn],
                policy_version=shop.config.policy.version if shop else None)
            revocation = self.ctx.event("token_revoked", actor_type="person", actor_id=person_id,
                                        person=person_id, shop=client_id)
            return [stage(withdrawal)], stage(revocation)

        withdrawn = self.ctx.consents.withdraw(person_id, client_id, purpose, field, describe)
        self.ctx.tokens.revoke_person_shop(person_id, client_id)
        self.ctx.relay_staged(person_id)
        return withdrawn

    def erase(self, person_id: str) -> None:
        """Erase the person in one step: every consent record and grant (so every shop's
        tokens stop working), the profile and the data key (crypto-shredding), with the
        audit event, which stays (pseudonymous id, no values): the log outlives what it
        records. Then the provider links are forgotten (the next sign-in is a new person;
        the erasure marker covers the moment in between) and the dead tokens freed."""
        keys = self.ctx.store.keys
        shop_ids = [shop.client_id for shop in self.ctx.shops]
        deleted = [*self.ctx.consents.erasure_keys(person_id, shop_ids),
                   keys.person_profile(person_id), keys.vault_data_key(person_id)]
        event = self.ctx.event("person_erased", actor_type="person", actor_id=person_id,
                               person=person_id)
        self.ctx.store.commits.erase_person(person_id, deleted, [stage(event)])
        self.ctx.profiles.erase(person_id)  # idempotent; drops this process's cached data key
        self.ctx.identities.forget(person_id)
        for client_id in shop_ids:
            self.ctx.tokens.revoke_person_shop(person_id, client_id)
        self.ctx.relay_staged(person_id)

    def receipts(self, consent: ShopConsent, person_id: str) -> list[str]:
        """The person's signed consent receipts for one shop: those of records written before
        receipts were kept by digest as they were stored, the others signed again now from
        what the record keeps (the same claims, checked against their digest; the current
        signing key, so they verify with the published JWKS). A receipt whose claims no
        longer match its digest (the issuer or the shop's sector changed since) is not
        signed: it is left out, with a warning naming it."""
        subject = self.ctx.subject_for(consent.shop, person_id)
        signed = list(consent.record.signed_receipts)
        for kept in consent.record.receipts:
            try:
                signed.append(reissue(kept, issuer=self.ctx.issuer, shop_id=consent.shop.client_id,
                                      subject=subject, sign=self._sign_receipt))
            except ReceiptMismatchError:
                log.warning("consent receipt not re-issued: its digest no longer matches",
                            extra={"shop": consent.shop.client_id, "receipt": kept.receipt_id})
        return signed

    def _sign_receipt(self, claims: dict[str, Any]) -> str:
        return self.ctx.signing_keys.sign(claims, "ES256")

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
                    "receipts": self.receipts(c, person_id),
                }
                for c in self.consents(person_id)
            ],
            # The person's own audit events (pseudonymous, field names only), newest first.
            "history": [{"index": logged.index, **logged.event.model_dump(mode="json")}
                        for logged in self.ctx.audit.query.latest_for_person(person_id, 10_000)],
        }

