"""Consent receipts: the claims of a Kantara Consent Receipt v1.1 for one grant.

The receipt is signed by the caller (the gateway's signing key) as a JWT and given to the
person; it names the shop as the recipient (PIPL art. 23) and the fields by name, never
their values. The person is identified by the shop's pairwise subject, never a raw id.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.consent.records import Grant
from gateway.policy import Catalogue, ShopPolicy

RECEIPT_VERSION = "KI-CR-v1.1.0"


def receipt_claims(*, issuer: str, shop_id: str, shop_name: str, shop_contact: str | None,
                   subject: str, policy: ShopPolicy, catalogue: Catalogue, grants: list[Grant],
                   language: str, timestamp: int) -> dict[str, Any]:
    purposes: list[dict[str, Any]] = []
    for purpose_id in sorted({g.purpose for g in grants}):
        purpose = policy.purpose(purpose_id)
        fields = sorted(g.field for g in grants if g.purpose == purpose_id)
        purposes.append({
            "purpose": purpose.description.get(language) if purpose else purpose_id,
            "purposeCategory": [purpose_id],
            "consentType": "EXPLICIT",
            "piiCategory": fields,
            "primaryPurpose": True,
            "termination": max(g.expires_at for g in grants if g.purpose == purpose_id),
            "thirdPartyDisclosure": True,
            "thirdPartyName": shop_name,
        })
    sensitive = sorted({g.field for g in grants
                        if g.field in catalogue.fields
                        and catalogue.fields[g.field].sensitivity == "sensitive"})
    return {
        "iss": issuer,
        "sub": subject,
        "iat": timestamp,
        "jti": str(uuid.uuid4()),
        "version": RECEIPT_VERSION,
        "jurisdiction": "CN",
        "consentTimestamp": timestamp,
        "collectionMethod": "consent screen at the Consent Gateway sign-in",
        "consentReceiptID": str(uuid.uuid4()),
        "language": language,
        "piiPrincipalId": subject,
        "piiControllers": [{"piiController": shop_name, "contact": shop_contact or "",
                            "piiControllerUrl": "", "address": {}, "email": shop_contact or "",
                            "phone": ""}],
        "policyUrl": f"{issuer}/policies/{shop_id}/v{policy.version}",
        "services": [{"service": shop_name, "purposes": purposes}],
        "sensitive": bool(sensitive),
        "spiCat": sensitive,
    }
