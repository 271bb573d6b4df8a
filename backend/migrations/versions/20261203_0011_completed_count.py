"""completed count: each user's number of live completed tasks, kept by the database itself

`users.completed_count` beside `users.task_count` (the live tasks) gives a list filtered by status
alone its `total` from the owner's row instead of counting up to 10,000 index entries. Triggers on
`tasks` keep it: every insert, update of `completed` or `deleted_at`, and delete of a row that
enters or leaves "live and completed" adds or takes one, whatever statement did it (a toggle, a
replace, the trash, a restore, a purge, the cascade of an account deletion). Each trigger's WHEN
clause skips the rows whose state does not change, so other writes pay nothing. Existing users
are counted once here.

On SQLite, a later migration that rebuilds `tasks` (`batch_alter_table`) drops these triggers
with the old table: it must create them again (`create_triggers`).

Revision ID: 0011_completed_count
Revises: 0010_organizing
Create Date: 2026-12-03 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_completed_count"
down_revision: str | None = "0010_organizing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A row is counted while it is live and completed: (completed AND deleted_at IS NULL), before the
# change (OLD) or after it (NEW).
_POSTGRESQL = [
    """
    CREATE FUNCTION tasks_completed_count() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE users SET completed_count = completed_count + 1 WHERE id = NEW.user_id;
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE users SET completed_count = completed_count - 1 WHERE id = OLD.user_id;
        ELSE
            UPDATE users
            SET completed_count = completed_count
                + CASE WHEN (NEW.completed AND NEW.deleted_at IS NULL) THEN 1 ELSE -1 END
            WHERE id = NEW.user_id;
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER tasks_completed_count_insert AFTER INSERT ON tasks
    FOR EACH ROW WHEN (NEW.completed AND NEW.deleted_at IS NULL)
    EXECUTE FUNCTION tasks_completed_count()
    """,
    """
    CREATE TRIGGER tasks_completed_count_update AFTER UPDATE OF completed, deleted_at ON tasks
    FOR EACH ROW
    WHEN ((OLD.completed AND OLD.deleted_at IS NULL) IS DISTINCT FROM
          (NEW.completed AND NEW.deleted_at IS NULL))
    EXECUTE FUNCTION tasks_completed_count()
    """,
    """
    CREATE TRIGGER tasks_completed_count_delete AFTER DELETE ON tasks
    FOR EACH ROW WHEN (OLD.completed AND OLD.deleted_at IS NULL)
    EXECUTE FUNCTION tasks_completed_count()
    """,
]
_SQLITE = [
    """
    CREATE TRIGGER tasks_completed_count_insert AFTER INSERT ON tasks
    WHEN (NEW.completed AND NEW.deleted_at IS NULL)
    BEGIN
        UPDATE users SET completed_count = completed_count + 1 WHERE id = NEW.user_id;
    END
    """,
    """
    CREATE TRIGGER tasks_completed_count_update AFTER UPDATE OF completed, deleted_at ON tasks
    WHEN (OLD.completed AND OLD.deleted_at IS NULL) IS NOT
         (NEW.completed AND NEW.deleted_at IS NULL)
    BEGIN
        UPDATE users
        SET completed_count = completed_count
            + CASE WHEN (NEW.completed AND NEW.deleted_at IS NULL) THEN 1 ELSE -1 END
        WHERE id = NEW.user_id;
    END
    """,
    """
    CREATE TRIGGER tasks_completed_count_delete AFTER DELETE ON tasks
    WHEN (OLD.completed AND OLD.deleted_at IS NULL)
    BEGIN
        UPDATE users SET completed_count = completed_count - 1 WHERE id = OLD.user_id;
    END
    """,
]
_TRIGGERS = ("insert", "update", "delete")


def create_triggers() -> None:
    """The triggers that keep `users.completed_count` (again, after SQLite rebuilt `tasks`)."""
    for statement in _POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _SQLITE:
        op.execute(statement)


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("completed_count", sa.Integer(), server_default="0", nullable=False),
    )
    users = sa.table("users", sa.column("id"), sa.column("completed_count"))
    tasks = sa.table("tasks", sa.column("user_id"), sa.column("completed"), sa.column("deleted_at"))
    counted = (
        sa.select(sa.func.count())
        .where(
            tasks.c.user_id == users.c.id,
            tasks.c.completed == sa.true(),
            tasks.c.deleted_at.is_(None),
        )
        .scalar_subquery()
    )
    op.execute(sa.update(users).values(completed_count=counted))
    create_triggers()


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in _TRIGGERS:
        op.execute(
            f"DROP TRIGGER tasks_completed_count_{name}" + (" ON tasks" if postgresql else "")
        )
    if postgresql:
        op.execute("DROP FUNCTION tasks_completed_count()")
    with op.batch_alter_table("users") as users:
        users.drop_column("completed_count")
