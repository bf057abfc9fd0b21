"""Consent records: what a person allowed each shop to receive, under which policy version."""

from gateway.consent.receipts import (
    KeptReceipt,
    PurposeStatement,
    ReceiptMismatchError,
    keep_receipt,
    receipt_claims,
    receipt_digest,
    reissue,
)
from gateway.consent.records import (
    ConsentItem,
    ConsentRecord,
    ConsentService,
    Grant,
    Refusal,
    consent_items,
    pending_items,
)

__all__ = ["ConsentItem", "ConsentRecord", "ConsentService", "Grant", "KeptReceipt",
           "PurposeStatement", "ReceiptMismatchError", "Refusal", "consent_items", "keep_receipt",
           "pending_items", "receipt_claims", "receipt_digest", "reissue"]
