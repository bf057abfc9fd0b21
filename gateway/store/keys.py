"""Every Redis key the gateway writes, in one place (documented in docs/storage.md).

Keys that belong to one person carry the hash tag ``{p:<person_id>}`` so that, on Redis
Cluster, everything of one person lives in one slot. Keys looked up by a secret (codes,
tokens) are named by the SHA-256 digest of the secret, never the secret itself, so a dump
of Redis does not hand out working credentials.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds key names under one prefix, so tests and tenants never collide."""

    prefix: str

    def auth_code(self, code_digest: str) -> str:
        return f"{self.prefix}code:{code_digest}"

    def access_token(self, token_digest: str) -> str:
        return f"{self.prefix}at:{token_digest}"

    def refresh_token(self, token_digest: str) -> str:
        return f"{self.prefix}rt:{token_digest}"

    def token_family(self, family_id: str) -> str:
        return f"{self.prefix}fam:{family_id}"

    def person_shop_families(self, person_id: str, client_id: str) -> str:
        """Set of the family keys a shop holds for a person (what withdrawal cleans up)."""
        return f"{self.prefix}{{p:{person_id}}}:families:{client_id}"

    def person_grant(self, person_id: str, client_id: str) -> str:
        """The grant generation of a person and shop (gateway/store/grants.py)."""
        return f"{self.prefix}{{p:{person_id}}}:grant:{client_id}"

    def person_erased(self, person_id: str) -> str:
        """Marker left by erasure: nothing is issued for this person id again."""
        return f"{self.prefix}{{p:{person_id}}}:erased"

    def person_outbox(self, person_id: str) -> str:
        """Hash of audit events committed with a state change, not yet in the log."""
        return f"{self.prefix}{{p:{person_id}}}:outbox"

    def outbox_pending(self) -> str:
        """Set of persons whose outbox may hold events (a superset: the relay prunes it)."""
        return f"{self.prefix}outbox:pending"

    def person_profile(self, person_id: str) -> str:
        return f"{self.prefix}{{p:{person_id}}}:profile"

    def person_consent(self, person_id: str, client_id: str) -> str:
        return f"{self.prefix}{{p:{person_id}}}:consent:{client_id}"

    def person_links(self, person_id: str) -> str:
        return f"{self.prefix}{{p:{person_id}}}:links"

    def person_link(self, provider_id: str, subject_digest: str) -> str:
        return f"{self.prefix}link:{provider_id}:{subject_digest}"

    def rate_limit(self, limit_name: str, subject_digest: str) -> str:
        """A GCRA bucket (gateway/store/limits.py): one number, expiring when the bucket is full."""
        return f"{self.prefix}rl:{limit_name}:{subject_digest}"

    def staff_session(self, session_digest: str) -> str:
        return f"{self.prefix}staffsession:{session_digest}"

    def audit_last_verify(self) -> str:
        return f"{self.prefix}{{audit}}:last-verify"

    def login_session(self, session_digest: str) -> str:
        return f"{self.prefix}session:{session_digest}"

    def authorize_request(self, request_id: str) -> str:
        return f"{self.prefix}authreq:{request_id}"

    def pushed_request(self, client_id: str, request_uri_digest: str) -> str:
        """A pushed authorization request (RFC 9126), by its client and the digest of its
        request_uri: only that client finds it, and it is taken once (GETDEL)."""
        return f"{self.prefix}par:{client_id}:{request_uri_digest}"

    def upstream_state(self, state_digest: str) -> str:
        return f"{self.prefix}upstate:{state_digest}"

    def demo_upstream_code(self, code_digest: str) -> str:
        return f"{self.prefix}democode:{code_digest}"

    def client_assertion_jti(self, client_id: str, jti_digest: str) -> str:
        return f"{self.prefix}jti:{client_id}:{jti_digest}"

    def dpop_proof_jti(self, proof_digest: str) -> str:
        """A used DPoP proof (RFC 9449 §11.1), by digest of key thumbprint and jti; expires
        when the proof's iat leaves the accepted window (gateway/oidc/dpop.py)."""
        return f"{self.prefix}dpop:{proof_digest}"

    # -- vault --

    def vault_data_key(self, person_id: str) -> str:
        """The person's wrapped data key (crypto-shredding deletes exactly this key)."""
        return f"{self.prefix}{{p:{person_id}}}:dek"

    def vault_data_key_pattern(self) -> str:
        """SCAN pattern matching every person's wrapped data key (rewrap, counting)."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}{{p:*}}:dek"

    def vault_data_key_person(self, key: str) -> str | None:
        """The person id in a key named by :meth:`vault_data_key`, or None for any other key."""
        head, tail = f"{self.prefix}{{p:", "}:dek"
        if len(key) < len(head) + len(tail) or not (key.startswith(head) and key.endswith(tail)):
            return None
        return key[len(head):-len(tail)]

    def vault_rewrap_progress(self) -> str:
        """Hash holding the SCAN cursor and counters of an unfinished rewrap."""
        return f"{self.prefix}vault:rewrap"

    # -- audit --
    # Every audit key carries the hash tag {audit}: the log is one total order, written by one
    # Lua script, so on Redis Cluster all of it lives in one slot (docs/audit.md).

    def audit_size(self) -> str:
        return f"{self.prefix}{{audit}}:size"

    def audit_head(self) -> str:
        return f"{self.prefix}{{audit}}:head"

    def audit_entries(self) -> str:
        return f"{self.prefix}{{audit}}:entries"

    def audit_tile(self, level: int, tile: int) -> str:
        return f"{self.prefix}{{audit}}:tile:{level}:{tile}"

    def audit_archived(self) -> str:
        return f"{self.prefix}{{audit}}:archived"

    def audit_sealed(self) -> str:
        return f"{self.prefix}{{audit}}:sealed"

    def audit_checkpoints(self) -> str:
        return f"{self.prefix}{{audit}}:checkpoints"

    def audit_checkpoint_lock(self) -> str:
        return f"{self.prefix}{{audit}}:checkpoint-lock"

    def audit_hours(self) -> str:
        return f"{self.prefix}{{audit}}:hours"

    def audit_store_id(self) -> str:
        """Random id written once into a new store; remembered outside Redis (continuity)."""
        return f"{self.prefix}{{audit}}:store-id"

    def audit_epoch(self) -> str:
        """The signed checkpoint that opened the current log epoch (gateway audit new-epoch)."""
        return f"{self.prefix}{{audit}}:epoch"

    def audit_event_ids(self, day: str) -> str:
        """Ids of relayed events appended on one UTC day (``yyyymmdd``): appends are idempotent."""
        return f"{self.prefix}{{audit}}:event-ids:{day}"

    def audit_index(self, dimension: str, value: str) -> str:
        return f"{self.prefix}{{audit}}:idx:{dimension}:{value}"
