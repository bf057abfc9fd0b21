"""Authorization codes, access tokens and refresh tokens in Redis.

Every credential is an opaque random value; Redis holds only its SHA-256 digest as the key
name, with a TTL. Everything issued from one authorization (the code, then each access and
refresh token) belongs to one *family*; a replayed code or refresh token revokes the whole
family (RFC 6749 §4.1.2, RFC 9700 §4.14.2).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from gateway.store import ConsumeOutcome, Store

TokenKind = Literal["access_token", "refresh_token"]
CODE_TOMBSTONE_SECONDS = 600  # a code replayed within 10 minutes still revokes its family


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


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

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_at - self.issued_at

    def is_expired(self) -> bool:
        return self.expires_at <= time.time()

    def is_revoked(self) -> bool:
        return False  # revoked tokens are deleted from Redis, so a found token is live


class TokenService:
    def __init__(self, store: Store, *, code_ttl: int, access_ttl: int, refresh_ttl: int) -> None:
        self._store = store
        self._keys = store.keys
        self.code_ttl = code_ttl
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        # Called after a replayed code or refresh token revoked its family (the provider
        # context records it in the audit log).
        self.on_replay: Callable[[str, str], None] = lambda person_id, client_id: None

    # -- codes ---------------------------------------------------------------------------

    def save_code(self, code: str, record: AuthorizationCode) -> None:
        """Store a new code and index its family under the person and shop (one round trip)."""
        families = self._keys.person_shop_families(record.person_id, record.client_id)
        pipe = self._store.redis.pipeline(transaction=False)
        pipe.set(self._keys.auth_code(digest(code)), json.dumps(asdict(record)), ex=self.code_ttl)
        pipe.sadd(families, record.family)
        pipe.expire(families, self.refresh_ttl)
        pipe.execute()

    def _consume(self, key: str, tombstone_ttl: int) -> dict[str, Any] | None:
        """Take a single-use record; a replay revokes its whole family and returns None."""
        result = self._store.consume_once(key, tombstone_ttl)
        if result.value is None:
            return None
        data: dict[str, Any] = json.loads(result.value)
        if result.outcome is ConsumeOutcome.REPLAYED:
            self.revoke_family(data["family"])
            self.on_replay(data["person_id"], data["client_id"])
            return None
        return data

    def consume_code(self, code: str) -> AuthorizationCode | None:
        """Take a code exactly once. A replay revokes what the first use issued."""
        data = self._consume(self._keys.auth_code(digest(code)), CODE_TOMBSTONE_SECONDS)
        return AuthorizationCode(**data) if data is not None else None

    # -- tokens --------------------------------------------------------------------------

    def save_tokens(
        self,
        token: dict[str, Any],
        *,
        client_id: str,
        person_id: str,
        family: str,
        auth_time: int,
        fields: list[str],
    ) -> None:
        """Store the access (and refresh) token of one grant in one transaction."""
        now = int(time.time())
        scope = str(token.get("scope", ""))
        pipe = self._store.redis.pipeline(transaction=True)
        family_key = self._keys.token_family(family)
        members = []
        kinds: tuple[tuple[TokenKind, int], ...] = (
            ("access_token", self.access_ttl), ("refresh_token", self.refresh_ttl))
        for kind, ttl in kinds:
            value = token.get(kind)
            if not value:
                continue
            key = (self._keys.access_token if kind == "access_token" else self._keys.refresh_token)(
                digest(value)
            )
            record = TokenRecord(kind, key, client_id, person_id, scope, family, now, now + ttl,
                                 auth_time, fields)
            pipe.set(key, json.dumps(asdict(record)), ex=ttl)
            members.append(key)
        pipe.sadd(family_key, *members)
        pipe.expire(family_key, self.refresh_ttl)
        pipe.execute()

    def find_access_token(self, token: str) -> TokenRecord | None:
        return self._load(self._store.get(self._keys.access_token(digest(token))))

    def find_refresh_token(self, token: str) -> TokenRecord | None:
        """Look a refresh token up without using it (introspection, revocation)."""
        return self._load(self._store.get(self._keys.refresh_token(digest(token))))

    def find_token(self, token: str, hint: str | None) -> TokenRecord | None:
        # RFC 7009 §2.1 / RFC 7662 §2.1: the hint orders the look-ups, it does not limit them.
        lookups = [self.find_access_token, self.find_refresh_token]
        if hint == "refresh_token":
            lookups.reverse()
        for lookup in lookups:
            record = lookup(token)
            if record is not None:
                return record
        return None

    def consume_refresh_token(self, token: str) -> TokenRecord | None:
        """Take a refresh token once (rotation). A replay revokes the whole family."""
        data = self._consume(self._keys.refresh_token(digest(token)), self.refresh_ttl)
        return TokenRecord(**data) if data is not None else None

    def revoke(self, record: TokenRecord) -> None:
        """RFC 7009 §2.1: revoking a refresh token also ends the access tokens of its grant."""
        if record.kind == "refresh_token":
            self.revoke_family(record.family)
        else:
            self._store.redis.delete(record.key)

    def revoke_family(self, family: str) -> None:
        family_key = self._keys.token_family(family)
        members = self._store.redis.smembers(family_key)
        pipe = self._store.redis.pipeline(transaction=True)
        if members:
            pipe.delete(*members)
        pipe.delete(family_key)
        pipe.execute()

    def revoke_person_shop(self, person_id: str, client_id: str) -> int:
        """End every grant a shop holds for a person (withdrawal, erasure). Returns the count."""
        families_key = self._keys.person_shop_families(person_id, client_id)
        families = self._store.members(families_key)
        for family in families:
            self.revoke_family(family)
        self._store.redis.delete(families_key)
        return len(families)

    @staticmethod
    def _load(raw: bytes | None) -> TokenRecord | None:
        if raw is None or raw.startswith(b"!"):  # "!" marks a used refresh token
            return None
        record = TokenRecord(**json.loads(raw))
        return None if record.is_expired() else record


def new_family() -> str:
    return secrets.token_urlsafe(16)
