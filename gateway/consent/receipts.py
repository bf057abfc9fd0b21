"""Consent receipts: a Kantara Consent Receipt v1.1 for one decision, kept by digest.

The receipt is signed by the gateway's signing key as a JWT and given to the person; it names
the shop as the recipient (PIPL art. 23) and the fields by name, never their values. The
person is identified by the shop's pairwise subject, never a raw id.

The consent record does not keep the signed JWT (2 to 3 KB of base64 per decision, for every
person at every shop) but a :class:`KeptReceipt`: the statement the receipt makes — when,
in which language, under which policy version, the shop's name and contact, each purpose as
it was described to the person with its fields and termination, the sensitive fields — and
the SHA-256 digest of the receipt's claims (:func:`receipt_digest`). :func:`reissue` builds
exactly those claims again, checks them against the digest and signs them with the current
signing key: the same receipt (same ids, same times), a fresh signature that verifies with
the published JWKS. The shop's texts are kept with the receipt rather than read from its
file at re-issue, because a renamed shop or a later policy version must not change what an
old receipt says the person agreed to; the issuer and the pairwise subject are the
deployment's and are computed again (the digest notices if they changed).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.policy import Catalogue, ShopPolicy

if TYPE_CHECKING:
    from gateway.consent.records import Grant

RECEIPT_VERSION = "KI-CR-v1.1.0"


class ReceiptMismatchError(Exception):
    """The claims built again do not match the kept digest (the issuer or the shop's pairwise
    subject changed since, or the record was altered): no receipt is signed."""


@dataclass(frozen=True, slots=True)
class PurposeStatement:
    purpose_id: str
    description: str  # as shown to the person, in the receipt's language
    fields: tuple[str, ...]  # sorted
    termination: int  # the latest expiry of the purpose's grants in this decision


@dataclass(frozen=True, slots=True)
class KeptReceipt:
    """What a receipt says, without its signature; enough to sign it again."""

    receipt_id: str  # a UUID: the receipt's consentReceiptID and its jti
    timestamp: int  # the decision: consentTimestamp and iat
    language: str
    policy_version: int
    shop_name: str
    shop_contact: str  # '' when the shop names none
    purposes: tuple[PurposeStatement, ...]  # sorted by purpose id
    sensitive: tuple[str, ...]  # the sensitive fields among them, sorted
    digest: str  # base64url SHA-256 of the canonical claims (receipt_digest)


def receipt_digest(claims: dict[str, Any]) -> str:
    """The digest a record keeps of a receipt: base64url (no padding) of SHA-256 over its
    claims as canonical JSON (keys sorted, no spaces, UTF-8). Anyone holding the receipt can
    compute it from the JWT's payload."""
    canonical = json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def receipt_claims(receipt: KeptReceipt, *, issuer: str, shop_id: str, subject: str) -> dict[str, Any]:
    """The receipt's claims (the JWT payload)."""
    purposes = [{
        "purpose": p.description,
        "purposeCategory": [p.purpose_id],
        "consentType": "EXPLICIT",
        "piiCategory": list(p.fields),
        "primaryPurpose": True,
        "termination": p.termination,
        "thirdPartyDisclosure": True,
        "thirdPartyName": receipt.shop_name,
    } for p in receipt.purposes]
    return {
        "iss": issuer,
        "sub": subject,
        "iat": receipt.timestamp,
        "jti": receipt.receipt_id,
        "version": RECEIPT_VERSION,
        "jurisdiction": "CN",
        "consentTimestamp": receipt.timestamp,
        "collectionMethod": "consent screen at the Consent Gateway sign-in",
        "consentReceiptID": receipt.receipt_id,
        "language": receipt.language,
        "piiPrincipalId": subject,
        "piiControllers": [{"piiController": receipt.shop_name, "contact": receipt.shop_contact,
                            "piiControllerUrl": "", "address": {}, "email": receipt.shop_contact,
                            "phone": ""}],
        "policyUrl": f"{issuer}/policies/{shop_id}/v{receipt.policy_version}",
        "services": [{"service": receipt.shop_name, "purposes": purposes}],
        "sensitive": bool(receipt.sensitive),
        "spiCat": list(receipt.sensitive),
    }


def keep_receipt(*, issuer: str, shop_id: str, shop_name: str, shop_contact: str | None,
                 subject: str, policy: ShopPolicy, catalogue: Catalogue, grants: Sequence[Grant],
                 language: str, timestamp: int) -> KeptReceipt:
    """The receipt of a decision that gave ``grants``, with the digest of its claims."""
    statements = []
    for purpose_id in sorted({g.purpose for g in grants}):
        purpose = policy.purpose(purpose_id)
        mine = [g for g in grants if g.purpose == purpose_id]
        statements.append(PurposeStatement(
            purpose_id, purpose.description.get(language) if purpose else purpose_id,
            tuple(sorted(g.field for g in mine)), max(g.expires_at for g in mine)))
    sensitive = sorted({g.field for g in grants
                        if g.field in catalogue.fields
                        and catalogue.fields[g.field].sensitivity == "sensitive"})
    unsigned = KeptReceipt(str(uuid.uuid4()), timestamp, language, policy.version, shop_name,
                           shop_contact or "", tuple(statements), tuple(sensitive), digest="")
    claims = receipt_claims(unsigned, issuer=issuer, shop_id=shop_id, subject=subject)
    return dataclasses.replace(unsigned, digest=receipt_digest(claims))


def reissue(receipt: KeptReceipt, *, issuer: str, shop_id: str, subject: str,
            sign: Callable[[dict[str, Any]], str]) -> str:
    """The signed receipt (a JWT, signed by ``sign``) whose claims are exactly the ones the
    digest was kept of; raises :class:`ReceiptMismatchError` rather than sign anything else."""
    claims = receipt_claims(receipt, issuer=issuer, shop_id=shop_id, subject=subject)
    if receipt_digest(claims) != receipt.digest:
        raise ReceiptMismatchError(f"receipt {receipt.receipt_id} no longer matches its digest")
    return sign(claims)


# -- compact form inside the consent record (gateway/consent/records.py) -----------------


def encode_receipt(receipt: KeptReceipt) -> list[Any]:
    """``[id (32 hex), timestamp, language, policy version, shop name, shop contact,
    [[purpose id, description, termination, [fields…]]…], [sensitive fields…], digest]``"""
    return [uuid.UUID(receipt.receipt_id).hex, receipt.timestamp, receipt.language,
            receipt.policy_version, receipt.shop_name, receipt.shop_contact,
            [[p.purpose_id, p.description, p.termination, list(p.fields)] for p in receipt.purposes],
            list(receipt.sensitive), receipt.digest]


def decode_receipt(data: Sequence[Any]) -> KeptReceipt:
    receipt_id, timestamp, language, version, name, contact, purposes, sensitive, digest = data
    return KeptReceipt(
        str(uuid.UUID(hex=receipt_id)), int(timestamp), str(language), int(version), str(name),
        str(contact),
        tuple(PurposeStatement(str(p), str(d), tuple(str(f) for f in fields), int(t))
              for p, d, t, fields in purposes),
        tuple(str(f) for f in sensitive), str(digest))
