"""Pool placements: which models the shared pool serves, their priority and memory estimate.

Revision ID: 0005_pool_placements
Revises: 0004_audit_and_upload_usage
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_pool_placements"
down_revision = "0004_audit_and_upload_usage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pool_placements",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pool_placements")
