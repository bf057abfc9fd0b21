"""Consent records: what a person allowed each shop to receive."""

from gateway.consent.records import ConsentRecord, ConsentService

__all__ = ["ConsentRecord", "ConsentService"]
