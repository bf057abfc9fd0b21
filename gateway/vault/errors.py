"""Errors of the encryption core, each a one-line message naming what is wrong.

Messages name key ids, file paths and field names, never key material or plaintext.
Errors an operator meets at start-up or on the command line (master key, key ring file)
are :class:`~gateway.errors.ConfigError`; errors met while serving (a blob that does not
open, a shop without a usable key) are :class:`VaultError`, which the caller turns into
a vague answer for the client and a precise log line.
"""

from __future__ import annotations

from gateway.errors import ConfigError, GatewayError


class VaultError(GatewayError):
    """Base class of errors raised while sealing, opening, wrapping or encrypting."""


# -- the master key and the key ring file (operator-facing) ---------------------------


class MasterKeyMissingError(ConfigError):
    """No master key was given, and the key ring must be sealed (demo mode is off)."""


class MasterKeyInvalidError(ConfigError):
    """The master key value or file does not hold 32 bytes (base64, hex or raw)."""


class WrongMasterKeyError(ConfigError):
    """The key ring file was sealed under a different master key."""


class KeyRingTamperedError(ConfigError):
    """The key ring file fails authentication or does not parse: it was altered or damaged."""


class KeyRingMissingError(ConfigError):
    """No key ring file exists yet (``gateway keys init`` creates one)."""


class KeyRingExistsError(ConfigError):
    """``init`` was asked for while a key ring already exists; it never overwrites one."""


class DevelopmentKeyRingError(ConfigError):
    """An unsealed development key ring was found while demo mode is off."""


class KeyStateError(ConfigError):
    """A key ring operation does not fit the key's state (retiring the primary, a key
    that still wraps data keys, a key demoted too recently)."""


# -- serving ---------------------------------------------------------------------------


class UnknownKeyError(VaultError):
    """Wrapped data names a key-encryption key id that the key ring does not hold."""


class RetiredKeyError(VaultError):
    """Wrapped data names a key-encryption key that was retired: its material is gone."""


class SealedDataError(VaultError):
    """A sealed blob is malformed, was altered, or belongs to another person or field."""


class DataKeyErasedError(SealedDataError):
    """The blob names a data key the person no longer has (crypto-shredded, or a forged
    key id): it cannot open. A subclass of :class:`SealedDataError`, so "cannot open"
    is one ``except`` for callers that need no finer reason."""


class ProfileWriteConflictError(VaultError):
    """A sealed profile was not stored: the person's wrapped data key changed (erased,
    re-created or rewrapped by another process) during every attempt to write it."""


class EncryptionKeyError(VaultError):
    """A shop's JWK Set offers no key usable for the requested JWE algorithm."""


class UnsupportedAlgorithmError(VaultError):
    """A JWE ``alg`` or ``enc`` outside :data:`SUPPORTED_JWE_ALGS` / ``ENCS`` was asked for."""
