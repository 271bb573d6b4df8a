"""sync: task versions, per-user revisions, the trash (soft delete), live-only list indexes

Every task gets `version` 1 and a revision: a user's tasks are numbered 1, 2, ... in the order
they were last changed (`updated_at`, then id), and the user's revision is the last of them, so
a client's first sync after the upgrade sees every task once. The list indexes become partial
(live tasks only), and the feed and the trash get theirs.

Revision ID: 0007_sync
Revises: 0006_deleted_subjects
Create Date: 2026-12-02 16:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007_sync"
down_revision: str | None = "0006_deleted_subjects"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("deleted_at IS NULL")
TRASHED = sa.text("deleted_at IS NOT NULL")
_LIST_INDEXES: tuple[tuple[str, tuple[str | sa.TextClause, ...]], ...] = (
    ("ix_tasks_user_created", ("user_id", "created_at", "id")),
    ("ix_tasks_user_updated", ("user_id", "updated_at", "id")),
    ("ix_tasks_user_due", ("user_id", "due_date", "id")),
    ("ix_tasks_user_priority", ("user_id", "priority", "id")),
    ("ix_tasks_user_title", ("user_id", sa.text("lower(title)"), "id")),
    ("ix_tasks_user_completed_created", ("user_id", "completed", "created_at", "id")),
)


def _where(condition: sa.TextClause | None) -> dict[str, Any]:
    return {} if condition is None else {"sqlite_where": condition, "postgresql_where": condition}


def _list_indexes(condition: sa.TextClause | None) -> None:
    for name, columns in _LIST_INDEXES:
        op.drop_index(name, table_name="tasks")
        op.create_index(name, "tasks", list(columns), **_where(condition))


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("revision", sa.BigInteger(), server_default="0", nullable=False))
        users.add_column(
            sa.Column("sync_horizon", sa.BigInteger(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("tasks") as tasks:
        tasks.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        tasks.add_column(sa.Column("revision", sa.BigInteger(), server_default="0", nullable=False))
        tasks.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    # Window functions and UPDATE ... FROM: PostgreSQL, and SQLite since 3.33.
    op.execute(
        """
        UPDATE tasks SET revision = numbered.revision
        FROM (
            SELECT id, ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY updated_at, id) AS revision
            FROM tasks
        ) AS numbered
        WHERE tasks.id = numbered.id
        """
    )
    op.execute(
        """
        UPDATE users SET revision = counted.revision
        FROM (SELECT user_id, COUNT(*) AS revision FROM tasks GROUP BY user_id) AS counted
        WHERE users.id = counted.user_id
        """
    )
    _list_indexes(LIVE)
    op.create_index("ix_tasks_user_revision", "tasks", ["user_id", "revision", "id"])
    op.create_index(
        "ix_tasks_user_deleted", "tasks", ["user_id", "deleted_at", "id"], **_where(TRASHED)
    )
    op.create_index("ix_tasks_deleted_at", "tasks", ["deleted_at"], **_where(TRASHED))


def downgrade() -> None:
    # The trash is emptied: a v1 schema has no place for it.
    op.execute("DELETE FROM tasks WHERE deleted_at IS NOT NULL")
    op.drop_index("ix_tasks_deleted_at", table_name="tasks")
    op.drop_index("ix_tasks_user_deleted", table_name="tasks")
    op.drop_index("ix_tasks_user_revision", table_name="tasks")
    _list_indexes(None)
    with op.batch_alter_table("tasks") as tasks:
        tasks.drop_column("deleted_at")
        tasks.drop_column("revision")
        tasks.drop_column("version")
    with op.batch_alter_table("users") as users:
        users.drop_column("sync_horizon")
        users.drop_column("revision")
