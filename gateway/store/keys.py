"""Every Redis key the gateway writes, in one place (documented in docs/storage.md).

Keys that belong to one person carry the hash tag ``{p:<person_id>}`` so that, on Redis
Cluster, everything of one person lives in one slot; codes and tokens carry a tag that hashes
to the same slot (gateway/store/slots.py). Keys looked up by a secret (codes,
tokens) are named by the SHA-256 digest of the secret, never the secret itself, so a dump
of Redis does not hand out working credentials.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds key names under one prefix, so tests and tenants never collide."""

    prefix: str

    # Codes and tokens: ``tag`` is the hash tag of the person's slot that the credential
    # names (gateway/store/slots.py); None only for credentials minted before slot hints.

    def auth_code(self, code_digest: str, tag: str | None = None) -> str:
        return self._credential("code", code_digest, tag)

    def access_token(self, token_digest: str, tag: str | None = None) -> str:
        return self._credential("at", token_digest, tag)

    def refresh_token(self, token_digest: str, tag: str | None = None) -> str:
        return self._credential("rt", token_digest, tag)

    def _credential(self, kind: str, secret_digest: str, tag: str | None) -> str:
        if tag is None:
            return f"{self.prefix}{kind}:{secret_digest}"
        return f"{self.prefix}{{{tag}}}:{kind}:{secret_digest}"

    def token_family(self, person_id: str, family_id: str) -> str:
        """The set of a family's live credentials, in the person's slot."""
        return f"{self.prefix}{{p:{person_id}}}:fam:{family_id}"

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

    def outbox_pending_in_slot(self, tag: str) -> str:
        """On Redis Cluster: the pending set of the persons of one slot (gateway/store/commits.py)."""
        return f"{self.prefix}{{{tag}}}:outbox:pending"

    def person_profile(self, person_id: str) -> str:
        return f"{self.prefix}{{p:{person_id}}}:profile"

    def person_consent(self, person_id: str, client_id: str) -> str:
        return f"{self.prefix}{{p:{person_id}}}:consent:{client_id}"

    def person_links(self, person_id: str) -> str:
        """The person's link index: hash of subject digest -> namespace (gateway/upstream/links.py)."""
        return f"{self.prefix}{{p:{person_id}}}:links"

    def person_link(self, provider_id: str, subject_digest: str) -> str:
        return f"{self.link_prefix()}{provider_id}:{subject_digest}"

    def link_prefix(self) -> str:
        """What every :meth:`person_link` name starts with."""
        return f"{self.prefix}link:"

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
    # Every key of one audit log shard carries that shard's hash tag: a shard is one total
    # order, written by one Lua script, so on Redis Cluster all of it lives in one slot. Shard 0
    # is tagged {audit}, exactly the keys of the unsharded log; shard i > 0 is tagged {audit:i}
    # (docs/audit.md, "Shards"). The audit_* methods below name shard 0's keys.

    def audit_shard(self, shard: int) -> AuditShardKeys:
        """The keys of audit log shard ``shard`` (0 <= shard < audit_shards)."""
        if shard < 0:
            raise ValueError("audit shards are numbered from 0")
        return AuditShardKeys(self.prefix, "{audit}" if shard == 0 else f"{{audit:{shard}}}")

    def audit_combined_checkpoints(self) -> str:
        """Checkpoints signed over every shard at once (in shard 0's slot, next to its lock)."""
        return self.audit_shard(0).audit_combined_checkpoints()

    def audit_size(self) -> str:
        return self.audit_shard(0).audit_size()

    def audit_head(self) -> str:
        return self.audit_shard(0).audit_head()

    def audit_entries(self) -> str:
        return self.audit_shard(0).audit_entries()

    def audit_tile(self, level: int, tile: int) -> str:
        return self.audit_shard(0).audit_tile(level, tile)

    def audit_archived(self) -> str:
        return self.audit_shard(0).audit_archived()

    def audit_sealed(self) -> str:
        return self.audit_shard(0).audit_sealed()

    def audit_checkpoints(self) -> str:
        return self.audit_shard(0).audit_checkpoints()

    def audit_checkpoint_lock(self) -> str:
        return self.audit_shard(0).audit_checkpoint_lock()

    def audit_hours(self) -> str:
        return self.audit_shard(0).audit_hours()

    def audit_store_id(self) -> str:
        return self.audit_shard(0).audit_store_id()

    def audit_epoch(self) -> str:
        return self.audit_shard(0).audit_epoch()

    def audit_event_ids(self, day: str) -> str:
        return self.audit_shard(0).audit_event_ids(day)

    def audit_index(self, dimension: str, value: str) -> str:
        return self.audit_shard(0).audit_index(dimension, value)


@dataclass(frozen=True, slots=True)
class AuditShardKeys:
    """The keys of one audit log shard, all under its hash tag (:meth:`KeySpace.audit_shard`)."""

    prefix: str
    tag: str  # "{audit}" or "{audit:<shard>}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}{self.tag}:{name}"

    def audit_size(self) -> str:
        return self._key("size")

    def audit_head(self) -> str:
        return self._key("head")

    def audit_entries(self) -> str:
        return self._key("entries")

    def audit_tile(self, level: int, tile: int) -> str:
        return self._key(f"tile:{level}:{tile}")

    def audit_archived(self) -> str:
        return self._key("archived")

    def audit_sealed(self) -> str:
        return self._key("sealed")

    def audit_cold(self) -> str:
        """Entries and complete tiles below this index live in the cold tier (gateway/audit/cold.py)."""
        return self._key("cold")

    def audit_cold_cleaned(self) -> str:
        """Up to which index Redis was cleared of what the cold tier holds (the tiering's last step)."""
        return self._key("cold-cleaned")

    def audit_checkpoints(self) -> str:
        return self._key("checkpoints")

    def audit_checkpoint_lock(self) -> str:
        return self._key("checkpoint-lock")

    def audit_combined_checkpoints(self) -> str:
        return self._key("combined-checkpoints")

    def audit_hours(self) -> str:
        return self._key("hours")

    def audit_store_id(self) -> str:
        """Random id written once into a new store; remembered outside Redis (continuity)."""
        return self._key("store-id")

    def audit_epoch(self) -> str:
        """The signed checkpoint that opened the current log epoch (gateway audit new-epoch)."""
        return self._key("epoch")

    def audit_event_ids(self, day: str) -> str:
        """Ids of relayed events appended on one UTC day (``yyyymmdd``): appends are idempotent."""
        return self._key(f"event-ids:{day}")

    def audit_index(self, dimension: str, value: str) -> str:
        return self._key(f"idx:{dimension}:{value}")
