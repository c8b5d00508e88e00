"""Initial registry schema: models, versions, aliases and their history, policies, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _when(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        _when("created_at"),
        sa.Column("latest_version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        _when("created_at"),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("parent", sa.String(200), nullable=False),
        sa.Column("signature", sa.JSON, nullable=False),
        sa.Column("model_file", sa.String(200), nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
    )
    op.create_index("ix_versions_model_id", "versions", ["model_id"])
    op.create_index("ix_versions_sha256", "versions", ["sha256"])
    op.create_table(
        "aliases",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("alias", sa.String(128), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        _when("updated_at"),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alias_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("alias", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        _when("moved_at"),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_alias_history_model_id", "alias_history", ["model_id"])
    op.create_table(
        "policies",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("revision", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("alias", sa.String(128), nullable=False),
        sa.Column("previous_version", sa.BigInteger, nullable=False),
        _when("at"),
    )
    op.create_index("ix_events_model", "events", ["model"])
    counter = op.create_table(
        "revision_counter",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counter, [{"id": 1, "revision": 0}])


def downgrade() -> None:
    for table in (
        "revision_counter",
        "events",
        "policies",
        "alias_history",
        "aliases",
        "versions",
        "models",
    ):
        op.drop_table(table)
