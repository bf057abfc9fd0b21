"""Keys: the signing key ring for ID tokens, and (later) envelope encryption of stored fields."""

from gateway.vault.secrets import load_or_create_secret
from gateway.vault.signing import SigningKey, SigningKeyRing

__all__ = ["SigningKey", "SigningKeyRing", "load_or_create_secret"]
