"""deleted subjects: a deleted Better Auth user's earlier tokens do not bring it back

Revision ID: 0006_deleted_subjects
Revises: 0005_accounts
Create Date: 2026-12-02 13:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_deleted_subjects"
down_revision: str | None = "0005_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deleted_subjects",
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_hash", name=op.f("pk_deleted_subjects")),
    )
    op.create_index("ix_deleted_subjects_deleted_at", "deleted_subjects", ["deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_deleted_subjects_deleted_at", table_name="deleted_subjects")
    op.drop_table("deleted_subjects")
