"""Consent records: what a person allowed each shop to receive, under which policy version."""

from gateway.consent.receipts import receipt_claims
from gateway.consent.records import (
    ConsentItem,
    ConsentRecord,
    ConsentService,
    Grant,
    Refusal,
    consent_items,
    pending_items,
)

__all__ = ["ConsentItem", "ConsentRecord", "ConsentService", "Grant", "Refusal", "consent_items",
           "pending_items", "receipt_claims"]
