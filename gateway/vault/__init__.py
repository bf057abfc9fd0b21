"""Keys and encryption: the signing key ring for ID tokens, the key-encryption key ring,
envelope encryption of stored fields with crypto-shredding, and JWE to shops
(docs/encryption.md)."""

from gateway.vault.cache import DEFAULT_CACHE_SIZE, DEFAULT_CACHE_TTL_SECONDS, DataKeyCache
from gateway.vault.datakeys import DataKeyStore
from gateway.vault.envelope import Envelope
from gateway.vault.errors import (
    DataKeyErasedError,
    DevelopmentKeyRingError,
    EncryptionKeyError,
    KeyRingExistsError,
    KeyRingMissingError,
    KeyRingTamperedError,
    KeyStateError,
    MasterKeyInvalidError,
    MasterKeyMissingError,
    ProfileWriteConflictError,
    RetiredKeyError,
    SealedDataError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
    VaultError,
    WrongMasterKeyError,
)
from gateway.vault.jwe import (
    DEFAULT_JWE_ENC,
    SUPPORTED_JWE_ALGS,
    SUPPORTED_JWE_ENCS,
    check_encryption_metadata,
    encrypt_claims,
    encrypt_nested_jwt,
    select_encryption_key,
)
from gateway.vault.keyring import KekInfo, KeyRing, load_key_ring
from gateway.vault.masterkey import MasterKey, load_master_key
from gateway.vault.rewrap import RewrapProgress, rewrap_data_keys
from gateway.vault.ringfile import KekState
from gateway.vault.secrets import load_or_create_secret
from gateway.vault.signing import SigningKey, SigningKeyRing

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_CACHE_TTL_SECONDS",
    "DEFAULT_JWE_ENC",
    "SUPPORTED_JWE_ALGS",
    "SUPPORTED_JWE_ENCS",
    "DataKeyCache",
    "DataKeyErasedError",
    "DataKeyStore",
    "DevelopmentKeyRingError",
    "EncryptionKeyError",
    "Envelope",
    "KekInfo",
    "KekState",
    "KeyRing",
    "KeyRingExistsError",
    "KeyRingMissingError",
    "KeyRingTamperedError",
    "KeyStateError",
    "MasterKey",
    "MasterKeyInvalidError",
    "MasterKeyMissingError",
    "ProfileWriteConflictError",
    "RetiredKeyError",
    "RewrapProgress",
    "SealedDataError",
    "SigningKey",
    "SigningKeyRing",
    "UnknownKeyError",
    "UnsupportedAlgorithmError",
    "VaultError",
    "WrongMasterKeyError",
    "check_encryption_metadata",
    "encrypt_claims",
    "encrypt_nested_jwt",
    "load_key_ring",
    "load_master_key",
    "load_or_create_secret",
    "rewrap_data_keys",
    "select_encryption_key",
]
