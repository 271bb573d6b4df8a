"""one row per session: a refresh-token family keeps only its current token

Used and revoked tokens were kept to recognise a reused token; every refresh token now carries
its family's id, so a token of a live family that is not its current one is recognised without
keeping any. Sessions already ended, and tokens already used, are deleted; the current token of
every live session keeps working.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 12:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tokens = sa.table(
        "refresh_tokens",
        sa.column("id", sa.Uuid()),
        sa.column("family_id", sa.Uuid()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("used_at", sa.DateTime(timezone=True)),
        sa.column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        tokens.delete().where(
            sa.or_(tokens.c.used_at.is_not(None), tokens.c.revoked_at.is_not(None))
        )
    )
    # A family never had two current tokens, but make sure: keep the newest.
    newer = sa.alias(tokens, "newer")
    op.execute(
        tokens.delete().where(
            sa.exists().where(
                newer.c.family_id == tokens.c.family_id,
                sa.or_(
                    newer.c.created_at > tokens.c.created_at,
                    sa.and_(newer.c.created_at == tokens.c.created_at, newer.c.id > tokens.c.id),
                ),
            )
        )
    )
    op.drop_index("ix_refresh_tokens_family", table_name="refresh_tokens")
    with op.batch_alter_table("refresh_tokens") as batch_op:
        batch_op.drop_column("used_at")
        batch_op.drop_column("revoked_at")
        batch_op.create_unique_constraint(op.f("uq_refresh_tokens_family_id"), ["family_id"])


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch_op:
        batch_op.drop_constraint(op.f("uq_refresh_tokens_family_id"), type_="unique")
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("used_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family_id"])
