"""Consent Gateway: an OpenID Connect provider that releases only what a person consented to."""

__version__ = "0.1.0"
