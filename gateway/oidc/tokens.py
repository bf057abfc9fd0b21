"""Authorization codes, access tokens and refresh tokens in Redis.

Every credential is an opaque random value (with a masked hint of its person's Redis slot,
gateway/store/slots.py); Redis holds only its SHA-256 digest as the key name, with a TTL.
Everything issued from one authorization (the code, then each access and refresh token)
belongs to one *family*; a replayed code or refresh token revokes the whole family
(RFC 6749 §4.1.2, RFC 9700 §4.14.2).

Every record also carries the *generation* of the person's grant to the shop it was issued
under; the scripts in :mod:`gateway.store.grants` compare it on every load and exchange, so
a withdrawal, a narrowing or an erasure ends every credential at once, wherever it is
(outstanding, mid-rotation, racing a replay). Codes and refresh tokens are *peeked* first
(the request is validated completely while nothing is used up) and *exchanged* last, in one
script that takes the credential and writes its successors.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from gateway.oidc.credentials import (
    AuthorizationCode,
    Record,
    TokenKind,
    TokenRecord,
    read_code,
    read_token,
    to_stored,
)
from gateway.oidc.repeats import open_answer, seal_answer
from gateway.store import Store
from gateway.store.commits import Staged
from gateway.store.grants import Exchange, Issue, NewToken, Peek, StagedEvent
from gateway.store.slots import CredentialRouting

__all__ = ["AuthorizationCode", "StaleGrantError", "TokenKind", "TokenRecord", "TokenService",
           "digest", "new_family", "new_secret"]

CODE_TOMBSTONE_SECONDS = 600  # a code replayed within 10 minutes still revokes its family


class StaleGrantError(Exception):
    """The person's grant changed between the consent decision and issuing the code."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


class TokenService:
    def __init__(self, store: Store, routing: CredentialRouting, *, code_ttl: int, access_ttl: int,
                 refresh_ttl: int, repeat_seconds: int = 0) -> None:
        self._store = store
        self._keys = store.keys
        self._routing = routing
        self._grants = store.grants
        self.code_ttl = code_ttl
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.repeat_seconds = repeat_seconds  # a refresh asked again this soon: the same answer
        # Called after a replayed code or refresh token revoked its family (the provider
        # context records it in the audit log).
        self.on_replay: Callable[[str, str], None] = lambda person_id, client_id: None

    def new_credential(self, person_id: str) -> str:
        """A new code or token value for ``person_id``: 256 random bits plus the masked hint of
        the person's Redis slot (gateway/store/slots.py), so its record can be checked
        against the person's grant in one script on Redis Cluster too."""
        return self._routing.mint(person_id)

    def code_key(self, code: str) -> str:
        return self._keys.auth_code(digest(code), self._routing.tag_of(code))

    def token_key(self, kind: TokenKind, token: str) -> str:
        key_for = self._keys.access_token if kind == "access_token" else self._keys.refresh_token
        return key_for(digest(token), self._routing.tag_of(token))

    # -- codes ---------------------------------------------------------------------------

    def issue_code(self, code: str, record: AuthorizationCode, generation: int | None,
                   ttl: int | None = None) -> None:
        """Store a new code under the grant generation the consent decision read
        (``None``: no grant yet, this code starts one), for ``ttl`` seconds (default
        ``code_ttl``). Raises :class:`StaleGrantError` when the grant changed meanwhile: the
        decision must be taken again."""
        record.gen = 1 if generation is None else generation
        record.grant_key = self._keys.person_grant(record.person_id, record.client_id)
        record.family_key = self._keys.token_family(record.person_id, record.family)
        record.key = self.code_key(code)
        outcome = self._grants.issue(
            record.key, to_stored(record, self._keys), ttl or self.code_ttl,
            person_id=record.person_id, grant=record.grant_key,
            erased=self._keys.person_erased(record.person_id), family=record.family_key,
            family_index=self._keys.person_shop_families(record.person_id, record.client_id),
            index_ttl=self.refresh_ttl, expected_generation=generation)
        if outcome is not Issue.DONE:
            raise StaleGrantError(outcome.name)

    def peek_code(self, code: str) -> AuthorizationCode | None:
        """A live code, not used up (the token request is validated first). A used one is a
        replay: it revokes everything issued from it."""
        key = self.code_key(code)
        record, _ = self._peek(key, lambda raw: read_code(raw, key, self._keys), replay=True)
        return record

    def peek_refresh_token(self, token: str) -> tuple[TokenRecord | None, dict[str, Any] | None]:
        """A live refresh token, not used up; a used one revokes its family (a replay) —
        unless it was used up within ``repeat_seconds`` and its grant is live: then its
        record and the answer its exchange gave (gateway/oidc/repeats.py)."""
        record, sealed = self._peek_token("refresh_token", token, replay=True)
        if record is None or sealed is None:
            return record, None
        answer = open_answer(token, sealed)
        return (record, answer) if answer is not None else (None, None)

    def _peek_token(self, kind: TokenKind, token: str, *, replay: bool
                    ) -> tuple[TokenRecord | None, bytes | None]:
        key = self.token_key(kind, token)
        return self._peek(key, lambda raw: read_token(raw, kind, key, self._keys), replay=replay)

    def _peek(self, key: str, read: Callable[[bytes], Record], *, replay: bool
              ) -> tuple[Record | None, bytes | None]:
        """The record if live (with ``replay``: also if just used and its answer kept, with
        that sealed answer)."""
        peeked = self._grants.peek(key, family_ttl=self.refresh_ttl, used_is_replay=replay)
        if peeked.value is None or peeked.outcome is Peek.UNKNOWN:
            return None, None
        record = read(peeked.value)
        if peeked.outcome is Peek.USED and replay:
            self.on_replay(record.person_id, record.client_id)
        if isinstance(record, TokenRecord) and record.is_expired():
            return None, None
        if peeked.outcome is Peek.REPEAT and replay:
            return record, peeked.answer
        return (record, None) if peeked.outcome is Peek.LIVE else (None, None)

    # -- tokens --------------------------------------------------------------------------

    def exchange(self, source: AuthorizationCode | TokenRecord, token: dict[str, Any], event: Staged, *,
                 access_jkt: str | None = None, refresh_jkt: str | None = None,
                 presented: str | None = None) -> Exchange:
        """Use up ``source`` (a peeked code or refresh token) and store the access (and
        refresh) token it is exchanged for, and stage ``event`` (its audit event) in the
        person's outbox, in one script: nothing is stored unless the source was still
        unused, its grant generation unchanged and its family live. ``presented``: the
        refresh token used up, under which the answer is kept for a repeat.
        ``access_jkt`` / ``refresh_jkt``: the DPoP key thumbprint each is bound to (written
        into the records, so binding costs nothing more)."""
        now = int(time.time())
        scope = str(token.get("scope", ""))
        fields = list(source.fields)
        new: list[NewToken] = []
        kinds: tuple[tuple[TokenKind, int], ...] = (
            ("access_token", self.access_ttl), ("refresh_token", self.refresh_ttl))
        for kind, ttl in kinds:
            value = token.get(kind)
            if not value:
                continue
            key = self.token_key(kind, value)
            record = TokenRecord(kind, key, source.client_id, source.person_id, scope, source.family,
                                 now, now + ttl, source.auth_time, fields, source.gen,
                                 source.grant_key, source.family_key,
                                 access_jkt if kind == "access_token" else refresh_jkt)
            new.append(NewToken(key, to_stored(record, self._keys), ttl))
        is_code = isinstance(source, AuthorizationCode)
        outcome, repeated = self._grants.exchange(
            source.key, grant=source.grant_key, family=source.family_key,
            family_index=self._keys.person_shop_families(source.person_id, source.client_id),
            generation=source.gen,
            tombstone_ttl=CODE_TOMBSTONE_SECONDS if is_code else self.refresh_ttl,
            family_ttl=self.refresh_ttl, tokens=new,
            answer=seal_answer(presented, token) if presented and self.repeat_seconds else b"",
            answer_ttl=self.repeat_seconds,
            event=StagedEvent(self._keys.person_outbox(source.person_id),
                              self._store.commits.pending_key(source.person_id), source.person_id,
                              event.event_id, event.payload))
        if outcome is Exchange.REPLAYED:
            self.on_replay(source.person_id, source.client_id)
        if outcome is Exchange.REPEATED:
            # The same refresh raced itself (a retry overtaking a slow first try): the answer
            # the first one got, in place of the one authlib prepared.
            answer = open_answer(presented, repeated) if presented and repeated else None
            if answer is None:
                return Exchange.STALE
            token.clear()
            token.update(answer)
        return outcome

    def find_access_token(self, token: str) -> TokenRecord | None:
        return self._peek_token("access_token", token, replay=False)[0]

    def find_refresh_token(self, token: str) -> TokenRecord | None:
        """Look a refresh token up without using it (introspection, revocation)."""
        return self._peek_token("refresh_token", token, replay=False)[0]

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

    def revoke(self, record: TokenRecord) -> None:
        """RFC 7009 §2.1: revoking a refresh token also ends the access tokens of its grant."""
        if record.kind == "refresh_token":
            self._grants.revoke_family(record.family_key, self.refresh_ttl)
        else:
            self._store.redis.delete(record.key)

    def revoke_person_shop(self, person_id: str, client_id: str) -> int:
        """Delete every family a shop holds for a person; returns how many there were.

        Withdrawal and erasure have already ended them by changing the grant generation;
        this frees their memory at once instead of at their TTL."""
        return self._grants.revoke_index(self._keys.person_shop_families(person_id, client_id),
                                         self.refresh_ttl, person_id=person_id)


def new_family() -> str:
    return secrets.token_urlsafe(16)
