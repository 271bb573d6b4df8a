"""event streams: the leases of open live-update streams, counted per user across workers

Revision ID: 0009_event_streams
Revises: 0008_idempotency_keys
Create Date: 2026-12-03 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_event_streams"
down_revision: str | None = "0008_idempotency_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_streams",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("worker", sa.Uuid(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_event_streams_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_streams")),
    )
    op.create_index("ix_event_streams_user_id", "event_streams", ["user_id"])
    op.create_index("ix_event_streams_worker", "event_streams", ["worker"])
    op.create_index("ix_event_streams_expires_at", "event_streams", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_event_streams_expires_at", table_name="event_streams")
    op.drop_index("ix_event_streams_worker", table_name="event_streams")
    op.drop_index("ix_event_streams_user_id", table_name="event_streams")
    op.drop_table("event_streams")
