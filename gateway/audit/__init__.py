"""The tamper-evident audit log: events, hash chain, RFC 9162 Merkle tree, signed checkpoints,
proofs, queries and exports. See docs/audit.md.
"""

from gateway.audit.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from gateway.audit.checkpointer import Checkpointer, SignedCheckpoint
from gateway.audit.combined import (
    CombinedCheckpoint,
    ShardedCheckpointer,
    verify_combined,
    verify_in_combined,
)
from gateway.audit.errors import AuditError, AuditIntegrityError, CheckpointError, ProofError
from gateway.audit.events import (
    ACTIONS,
    Action,
    ActorType,
    AuditEvent,
    Outcome,
    canonical_json,
    decode_event,
    utc_timestamp,
)
from gateway.audit.export import ExportReader, export_csv, export_jsonl, export_log
from gateway.audit.keyfile import AuditKeys, load_audit_keys
from gateway.audit.log import Appended, AuditLog
from gateway.audit.merkle import (
    EMPTY_ROOT,
    MemorySubtrees,
    TreeBuilder,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from gateway.audit.note import NoteSigner, NoteVerifier, open_note, sign_note
from gateway.audit.proofs import TlogProof, prove, prove_latest, verify_proof
from gateway.audit.query import AuditFilter, AuditQuery, LoggedEvent, Page
from gateway.audit.service import AuditService
from gateway.audit.shard_query import ShardedQuery
from gateway.audit.shards import shard_of_person, shard_origin
from gateway.audit.verify import (
    Problem,
    VerifyReport,
    verify_export,
    verify_log,
    verify_shard_exports,
    verify_shards,
)

__all__ = [
    "ACTIONS",
    "EMPTY_ROOT",
    "Action",
    "ActorType",
    "Appended",
    "AuditError",
    "AuditEvent",
    "AuditFilter",
    "AuditIntegrityError",
    "AuditKeys",
    "AuditLog",
    "AuditQuery",
    "AuditService",
    "Checkpoint",
    "CheckpointError",
    "Checkpointer",
    "CombinedCheckpoint",
    "ExportReader",
    "LoggedEvent",
    "MemorySubtrees",
    "NoteSigner",
    "NoteVerifier",
    "Outcome",
    "Page",
    "Problem",
    "ProofError",
    "ShardedCheckpointer",
    "ShardedQuery",
    "SignedCheckpoint",
    "TlogProof",
    "TreeBuilder",
    "VerifyReport",
    "canonical_json",
    "decode_event",
    "export_csv",
    "export_jsonl",
    "export_log",
    "leaf_hash",
    "load_audit_keys",
    "node_hash",
    "open_note",
    "prove",
    "prove_latest",
    "shard_of_person",
    "shard_origin",
    "sign_checkpoint",
    "sign_note",
    "utc_timestamp",
    "verify_checkpoint",
    "verify_combined",
    "verify_consistency",
    "verify_export",
    "verify_in_combined",
    "verify_inclusion",
    "verify_log",
    "verify_proof",
    "verify_shard_exports",
    "verify_shards",
]
