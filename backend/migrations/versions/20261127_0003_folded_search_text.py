"""folded search text: tasks.title_folded and tasks.description_folded

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000
_TASKS = sa.table(
    "tasks",
    sa.column("id", sa.Uuid()),
    sa.column("title", sa.String()),
    sa.column("description", sa.String()),
    sa.column("title_folded", sa.String()),
    sa.column("description_folded", sa.String()),
)


def upgrade() -> None:
    op.add_column("tasks", sa.Column("title_folded", sa.String(), nullable=True))
    op.add_column("tasks", sa.Column("description_folded", sa.String(), nullable=True))
    _fold_existing_tasks()
    with op.batch_alter_table("tasks") as batch:
        batch.alter_column("title_folded", existing_type=sa.String(), nullable=False)
    if op.get_bind().dialect.name == "sqlite":
        # SQLite alters a column by copying the table, which loses this expression index.
        op.create_index("ix_tasks_user_title", "tasks", ["user_id", sa.text("lower(title)"), "id"])


def _fold_existing_tasks() -> None:
    """Fold what is stored, in batches by id: the same str.casefold() the service applies."""
    connection = op.get_bind()
    update = (
        _TASKS.update()
        .where(_TASKS.c.id == sa.bindparam("task_id"))
        .values(
            title_folded=sa.bindparam("new_title_folded"),
            description_folded=sa.bindparam("new_description_folded"),
        )
    )
    after = None
    while True:
        query = sa.select(_TASKS.c.id, _TASKS.c.title, _TASKS.c.description).order_by(_TASKS.c.id)
        if after is not None:
            query = query.where(_TASKS.c.id > after)
        rows = connection.execute(query.limit(_BATCH)).all()
        if not rows:
            return
        connection.execute(
            update,
            [
                {
                    "task_id": row.id,
                    "new_title_folded": row.title.casefold(),
                    "new_description_folded": row.description and row.description.casefold(),
                }
                for row in rows
            ],
        )
        after = rows[-1].id


def downgrade() -> None:
    op.drop_column("tasks", "description_folded")
    op.drop_column("tasks", "title_folded")
