"""Derived versions: lineage and gate status on versions, derive jobs, job events.

Revision ID: 0002_derive_jobs
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_derive_jobs"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("lineage", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default=""))
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("job", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("detail", sa.JSON, nullable=True))
    op.create_table(
        "derive_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("parent_version", sa.BigInteger, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("eval_data", sa.LargeBinary, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("child_version", sa.BigInteger, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_derive_jobs_model", "derive_jobs", ["model"])


def downgrade() -> None:
    op.drop_index("ix_derive_jobs_model", "derive_jobs")
    op.drop_table("derive_jobs")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("detail")
        batch.drop_column("job")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("status")
        batch.drop_column("lineage")
