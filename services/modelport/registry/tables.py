"""The registry's metadata schema (SQLAlchemy Core), shared by the store and the migrations.

Every change bumps the single-row `revision_counter` inside its transaction and
appends a row to `events`. Bumping the counter takes a row lock, so writers are
serialised and revisions become visible in order: a watcher that has seen
revision N can never later find an event N-1 committed behind its back.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("labels", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Highest version number ever assigned: numbers are never reused, so
    # "model:7" always names the same bytes.
    Column("latest_version", BigInteger, nullable=False, default=0),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False, index=True),
    Column("version", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("parent", String(200), nullable=False, default=""),
    Column("signature", JSON, nullable=False),
    Column("model_file", String(200), nullable=False),
    # {"method", "parameters", "job"}: how the version was made from `parent`.
    Column("lineage", JSON, nullable=False, default=dict),
    # "" (pushed by hand), "accepted" or "rejected" (a gated derive job's child).
    Column("status", String(16), nullable=False, default=""),
    UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("alias", String(128), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("revision", BigInteger, nullable=False),
)

alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False, index=True),
    Column("alias", String(128), nullable=False),
    # 0: the alias was deleted.
    Column("version", BigInteger, nullable=False),
    Column("moved_at", DateTime(timezone=True), nullable=False),
    Column("revision", BigInteger, nullable=False),
)

policies = Table(
    "policies",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("policy", JSON, nullable=False),
    Column("revision", BigInteger, nullable=False),
)

# Models the shared pool serves (`serve inference --pool`); no row: not pooled.
pool_placements = Table(
    "pool_placements",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("priority", Integer, nullable=False, default=0),
    Column("memory_bytes", BigInteger, nullable=False, default=0),
    Column("revision", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),
    # Names, not ids: events outlive the models they mention.
    Column("model", String(128), nullable=False, index=True),
    Column("version", BigInteger, nullable=False, default=0),
    Column("alias", String(128), nullable=False, default=""),
    Column("previous_version", BigInteger, nullable=False, default=0),
    Column("at", DateTime(timezone=True), nullable=False),
    # DERIVE_* events: the job and {"stage", "progress", "message"}.
    Column("job", String(32), nullable=False, default=""),
    Column("detail", JSON, nullable=True),
)

derive_jobs = Table(
    "derive_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    # sha256 of the worker's token: only the worker may report or upload.
    Column("token_sha256", String(64), nullable=False),
    Column("model", String(128), nullable=False, index=True),
    Column("parent_version", BigInteger, nullable=False),
    # spec, metric, gate, aliases, force, labels, eval_format.
    Column("request", JSON, nullable=False),
    # The caller's evaluation data; dropped once the job ends.
    Column("eval_data", LargeBinary, nullable=True),
    Column("state", String(16), nullable=False),
    Column("stage", String(64), nullable=False, default=""),
    Column("progress", Float, nullable=False, default=0.0),
    Column("message", Text, nullable=False, default=""),
    Column("child_version", BigInteger, nullable=False, default=0),
    Column("verdict", String(16), nullable=False, default=""),
    Column("metrics", JSON, nullable=False),
    Column("executor", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

revision_counter = Table(
    "revision_counter",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

# Who did what to which model, from where, and how it ended (see auth.audit).
# Written after the change it records commits, and for refusals too.
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("service", String(32), nullable=False),
    Column("action", String(32), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("code", String(32), nullable=False),
    Column("tenant", String(128), nullable=False, index=True),
    Column("subject", String(256), nullable=False),
    Column("method", String(16), nullable=False),
    Column("peer", String(256), nullable=False),
    Column("model", String(128), nullable=False, index=True),
    Column("version", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    Column("message", Text, nullable=False),
    Column("trace_id", String(32), nullable=False),
)

# Bytes each tenant uploaded per UTC day, shared by every registry replica.
upload_usage = Table(
    "upload_usage",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("bytes", BigInteger, nullable=False),
)

# Training datasets (migration 0002): blobs under `<blob-dir>/datasets/`, apart
# from version archives, so the version blob sweep never sees them.
datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, index=True),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("format", String(32), nullable=False),
    Column("file_name", String(200), nullable=False),
    Column("examples", BigInteger, nullable=False),
    Column("validation_examples", BigInteger, nullable=False),
    Column("validation_fraction", Float, nullable=False),
    Column("stats", JSON, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("name", "sha256", name="uq_datasets_name_sha256"),
)
