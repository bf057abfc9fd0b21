"""What a code or token stands for, and its record as stored in Redis.

A person has a live access and refresh token at every shop they use, so records are kept
small (docs/storage.md, "Token records, families and indexes"): compact JSON with
one-letter member names, times relative to the token's issue, lists space-separated,
without what follows from the key it is stored under (its own key name, the token's kind),
without
members at their default (no nonce, no DPoP key, no fields), and without the names of its
grant and family keys, which follow from its person, shop and family — unless a record from
before slot hints named other ones (then ``G`` / ``F`` keep them). The grant scripts read
``g``, ``p``, ``c``, ``f``, ``G`` and ``F`` (gateway/store/grants.py).

Records written before (named members, ``asdict`` of the dataclasses, with ``gen``,
``grant_key``, ``family_key`` and ``key``) are still read. A gateway before this format
cannot read what this one writes: every gateway is upgraded at once (docs/storage.md,
"Token records, families and indexes").
"""

from __future__ import annotations

import json
import time
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, TypeVar

from gateway.store.grants import checked_keys
from gateway.store.keys import KeySpace

TokenKind = Literal["access_token", "refresh_token"]


@dataclass(slots=True)
class AuthorizationCode:
    """What an authorization code stands for (authlib ``AuthorizationCodeMixin``)."""

    client_id: str
    person_id: str
    redirect_uri: str
    scope: str
    family: str
    auth_time: int
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    amr: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # catalogue fields the shop asked for
    dpop_jkt: str | None = None  # RFC 9449 §10: the tokens must be bound to this DPoP key
    gen: int = 0  # the grant generation it was issued under (gateway/store/grants.py)
    grant_key: str = ""
    family_key: str = ""
    key: str = ""  # its own Redis key

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> list[str] | None:
        return self.amr or None


@dataclass(slots=True)
class TokenRecord:
    """An access or refresh token as stored (authlib ``TokenMixin``)."""

    kind: TokenKind
    key: str
    client_id: str
    person_id: str
    scope: str
    family: str
    issued_at: int
    expires_at: int
    auth_time: int
    fields: list[str] = field(default_factory=list)
    gen: int = 0
    grant_key: str = ""
    family_key: str = ""
    jkt: str | None = None  # DPoP-bound (RFC 9449): the thumbprint of the client's key

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_at - self.issued_at

    def is_expired(self) -> bool:
        return self.expires_at <= time.time()

    def is_revoked(self) -> bool:
        return False  # only live records are ever loaded (gateway/store/grants.py)


Record = TypeVar("Record", AuthorizationCode, TokenRecord)

# Member -> its name as stored. Not stored: ``key`` and ``kind`` (the key it is read from
# says them), ``grant_key`` and ``family_key`` (``G`` / ``F`` only where not canonical).
_TOKEN_NAMES = {"client_id": "c", "person_id": "p", "scope": "s", "family": "f", "issued_at": "i",
                "expires_at": "e", "auth_time": "a", "fields": "d", "gen": "g", "jkt": "j"}
_CODE_NAMES = {"client_id": "c", "person_id": "p", "redirect_uri": "r", "scope": "s", "family": "f",
               "auth_time": "a", "nonce": "n", "code_challenge": "x", "code_challenge_method": "m",
               "amr": "o", "fields": "d", "dpop_jkt": "j", "gen": "g"}


def _names(record_type: type[AuthorizationCode] | type[TokenRecord]) -> dict[str, str]:
    return _CODE_NAMES if record_type is AuthorizationCode else _TOKEN_NAMES


def _joined(values: list[str]) -> str | list[str]:
    """A list of identifiers (field names, amr values) space-separated, like a scope; as a list
    where that would not read back the same."""
    if all(value and " " not in value for value in values):
        return " ".join(values)
    return values


def _split(stored: str | list[str]) -> list[str]:
    if isinstance(stored, list):
        return stored
    return stored.split(" ") if stored else []


def _as_written(record_type: type[AuthorizationCode] | type[TokenRecord], values: dict[str, Any]
                ) -> dict[str, Any]:
    """Members as written: lists joined (:func:`_joined`); a token's expiry and sign-in time
    relative to its issue (its lifetime and the sign-in's age: fewer digits, and a fresh
    sign-in's age is 0 and left out)."""
    written = values | {name: _joined(values[name]) for name in ("fields", "amr") if name in values}
    if record_type is TokenRecord:
        written |= {"expires_at": values["expires_at"] - values["issued_at"],
                    "auth_time": values["issued_at"] - values["auth_time"]}
    return written


def _as_read(record_type: type[AuthorizationCode] | type[TokenRecord], written: dict[str, Any]
             ) -> dict[str, Any]:
    """The inverse of :func:`_as_written`."""
    values = written | {name: _split(written[name]) for name in ("fields", "amr") if name in written}
    if record_type is TokenRecord:
        values |= {"expires_at": written["issued_at"] + written["expires_at"],
                   "auth_time": written["issued_at"] - written["auth_time"]}
    return values


def _left_out(record_type: type[AuthorizationCode] | type[TokenRecord]) -> dict[str, Any]:
    """Member -> the written value it is left out at: its default (written as such), and for a
    token a sign-in age of 0."""
    defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory()
                for f in fields(record_type) if f.default is not MISSING or f.default_factory is not MISSING}
    written = {name: _joined(value) if isinstance(value, list) else value for name, value in defaults.items()}
    return written | ({"auth_time": 0} if record_type is TokenRecord else {})


_LEFT_OUT: dict[type, dict[str, Any]] = {t: _left_out(t) for t in (AuthorizationCode, TokenRecord)}


def to_stored(record: AuthorizationCode | TokenRecord, keys: KeySpace) -> str:
    """``record`` as stored: compact JSON (module docstring)."""
    names, left_out = _names(type(record)), _LEFT_OUT[type(record)]
    written = _as_written(type(record), {name: getattr(record, name) for name in names})
    data = {names[name]: value for name, value in written.items()
            if name not in left_out or value != left_out[name]}
    if record.grant_key != keys.person_grant(record.person_id, record.client_id):
        data["G"] = record.grant_key
    if record.family_key != keys.token_family(record.person_id, record.family):
        data["F"] = record.family_key
    return json.dumps(data, separators=(",", ":"))


def read_code(raw: bytes | str, key: str, keys: KeySpace) -> AuthorizationCode:
    """The code stored under ``key`` as ``raw`` (either format)."""
    return _read(AuthorizationCode, json.loads(raw), keys, key=key)


def read_token(raw: bytes | str, kind: TokenKind, key: str, keys: KeySpace) -> TokenRecord:
    """The ``kind`` token stored under ``key`` as ``raw`` (either format)."""
    return _read(TokenRecord, json.loads(raw), keys, key=key, kind=kind)


def _read(record_type: type[Record], data: dict[str, Any], keys: KeySpace, **known: Any) -> Record:
    grant, family = checked_keys(keys, data) or ("", "")
    members = {f.name for f in fields(record_type)}
    if "gen" in data:  # written before compact records: the members by their own names
        values = {name: value for name, value in data.items() if name in members}
    else:
        left_out = _LEFT_OUT[record_type]
        written = {name: data[short] if short in data else left_out[name]
                   for name, short in _names(record_type).items() if short in data or name in left_out}
        values = _as_read(record_type, written)
    return record_type(**(values | known | {"grant_key": grant, "family_key": family}))
