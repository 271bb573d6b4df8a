"""organizing: task tags (a JSON array on the task, and `task_tags`, folded and indexed, for the
live tasks) and positions (fractional indexes, byte-ordered)

Existing tasks get no tags, and positions in the order the list showed them by default (newest
first): per user, `d` and four base-62 digits of the task's rank, the keys a rebalance writes.

Revision ID: 0010_organizing
Revises: 0009_event_streams
Create Date: 2026-12-03 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_organizing"
down_revision: str | None = "0009_event_streams"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("deleted_at IS NULL")
DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
POSITION = sa.String(64).with_variant(postgresql.VARCHAR(64, collation="C"), "postgresql")


def _positions() -> sa.Update:
    tasks = sa.table(
        "tasks",
        sa.column("id", sa.Uuid()),
        sa.column("user_id", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("position", sa.String()),
    )
    rank = (
        sa.func.row_number().over(
            partition_by=tasks.c.user_id, order_by=(tasks.c.created_at.desc(), tasks.c.id.desc())
        )
        - 1
    )
    ranked = sa.select(tasks.c.id, sa.type_coerce(rank, sa.BigInteger).label("rank")).subquery(
        "ranked"
    )
    digits = [
        sa.func.substr(
            sa.literal(DIGITS), sa.cast(ranked.c.rank // 62**power % 62 + 1, sa.Integer), 1
        )
        for power in (3, 2, 1, 0)
    ]
    key = sa.literal("d") + digits[0] + digits[1] + digits[2] + digits[3]
    return sa.update(tasks).where(tasks.c.id == ranked.c.id).values(position=key)


def _title_index_again() -> None:
    """SQLite alters a column by copying the table, which loses this expression index."""
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(
            "ix_tasks_user_title",
            "tasks",
            ["user_id", sa.text("lower(title)"), "id"],
            sqlite_where=LIVE,
        )


def upgrade() -> None:
    op.add_column("tasks", sa.Column("tags", sa.Text(), server_default="[]", nullable=False))
    op.add_column("tasks", sa.Column("position", POSITION, nullable=True))
    op.execute(_positions())
    with op.batch_alter_table("tasks") as tasks:
        tasks.alter_column("position", existing_type=POSITION, nullable=False)
    _title_index_again()
    op.create_index(
        "ix_tasks_user_position",
        "tasks",
        ["user_id", "position", "id"],
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    op.create_table(
        "task_tags",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_task_tags_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_task_tags_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "key", "name", "task_id", name=op.f("pk_task_tags")),
    )
    op.create_index("ix_task_tags_task", "task_tags", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_task_tags_task", table_name="task_tags")
    op.drop_table("task_tags")
    op.drop_index("ix_tasks_user_position", table_name="tasks")
    with op.batch_alter_table("tasks") as tasks:
        tasks.drop_column("position")
        tasks.drop_column("tags")
    _title_index_again()
