"""search: through an index, on both databases

PostgreSQL: trigram GIN indexes of the folded texts led by the owner, of the live tasks, which
serve `LIKE '%text%'` (extensions pg_trgm and btree_gin: both trusted, so the database's owner
may create them).

SQLite: `tasks_search`, an FTS5 table with the trigram tokenizer over the folded texts, external
content (`tasks`, by rowid): trigrams only, no copy of the text; every task is indexed, the trash
too, so that it is exactly what FTS5's `rebuild` makes of `tasks` (which is how it is filled
here) and its `integrity-check` holds. Triggers keep it in step. A later migration that copies
`tasks` (a batch alter) drops these triggers and may give tasks new rowids: it must create them
again and rebuild.

Downgrading drops the indexes, the table and the triggers, not the extensions: they may have been
there before, or serve something else.

Revision ID: 0012_search
Revises: 0011_completed_count
Create Date: 2026-12-03 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_search"
down_revision: str | None = "0011_completed_count"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("deleted_at IS NULL")
INDEXES = {
    "ix_tasks_user_title_trgm": "title_folded",
    "ix_tasks_user_description_trgm": "description_folded",
}
# An external-content table forgets a row by being told what it indexed of it.
_FORGET_OLD = (
    "INSERT INTO tasks_search (tasks_search, rowid, title_folded, description_folded) "
    "VALUES ('delete', old.rowid, old.title_folded, old.description_folded);"
)
_INDEX_NEW = (
    "INSERT INTO tasks_search (rowid, title_folded, description_folded) "
    "VALUES (new.rowid, new.title_folded, new.description_folded);"
)
SQLITE_UPGRADE = (
    "CREATE VIRTUAL TABLE tasks_search USING fts5(title_folded, description_folded, "
    "content='tasks', content_rowid='rowid', tokenize='trigram case_sensitive 1')",
    "CREATE TRIGGER tasks_search_insert AFTER INSERT ON tasks BEGIN " + _INDEX_NEW + " END",
    "CREATE TRIGGER tasks_search_delete AFTER DELETE ON tasks BEGIN " + _FORGET_OLD + " END",
    "CREATE TRIGGER tasks_search_update AFTER UPDATE OF title_folded, description_folded ON tasks "
    "WHEN old.title_folded IS NOT new.title_folded "
    "OR old.description_folded IS NOT new.description_folded "
    "BEGIN " + _FORGET_OLD + " " + _INDEX_NEW + " END",
    "INSERT INTO tasks_search (tasks_search) VALUES ('rebuild')",
)
SQLITE_DOWNGRADE = (
    "DROP TRIGGER tasks_search_update",
    "DROP TRIGGER tasks_search_delete",
    "DROP TRIGGER tasks_search_insert",
    "DROP TABLE tasks_search",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_UPGRADE:
            op.execute(statement)
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    for name, column in INDEXES.items():
        op.create_index(
            name,
            "tasks",
            ["user_id", column],
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
            postgresql_where=LIVE,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWNGRADE:
            op.execute(statement)
        return
    for name in INDEXES:
        op.drop_index(name, table_name="tasks")
