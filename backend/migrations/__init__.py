"""Alembic migrations, shipped inside the package so that `todo-api migrate` works anywhere.

`alembic_config()` builds the configuration in code (there is no alembic.ini to keep in step);
the environment is `env.py`, the revisions are in `versions/`.
"""

from collections.abc import Mapping
from functools import cache
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from backend.database_url import normalize_database_url
from backend.models import ONLY_ON, TASKS_SEARCH

VERSION_TABLE = "alembic_version"
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "backend:migrations")
    config.set_main_option("file_template", FILE_TEMPLATE)
    # configparser interpolation: a literal % (in a password, say) is written %%.
    url = normalize_database_url(database_url)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Bring the database to the newest revision. Blocking: call it from a thread in async code."""
    command.upgrade(alembic_config(database_url), "head")


@cache
def head_revision() -> str | None:
    """The newest revision this version ships."""
    config = Config()
    config.set_main_option("script_location", "backend:migrations")
    return ScriptDirectory.from_config(config).get_current_head()


def is_at_head(connection: Connection) -> bool:
    """Whether the database's schema is at this version's newest revision (run with
    `AsyncConnection.run_sync`). Read directly: Alembic's MigrationContext logs at every use."""
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return False
    version = sa.column("version_num", sa.String)
    revisions = connection.execute(sa.select(version).select_from(sa.table(VERSION_TABLE)))
    return list(revisions.scalars()) == [head_revision()]


# An external-content FTS5 table and its shadow tables (FTS5's own names).
_SEARCH_TABLES = frozenset(
    [TASKS_SEARCH.name]
    + [f"{TASKS_SEARCH.name}_{shadow}" for shadow in ("data", "idx", "docsize", "config")]
)


def compared(dialect: str) -> dict[str, Any]:
    """What comparing the models with a database of `dialect` leaves out (Alembic's
    `include_name` and `include_object`): SQLite's search table and the tables FTS5 keeps it in,
    which the metadata cannot describe, and the indexes of other dialects."""

    def include_name(name: str | None, type_: str, _parents: Mapping[str, str | None]) -> bool:
        return not (type_ == "table" and name in _SEARCH_TABLES)

    def include_object(item: Any, _name: str | None, type_: str, reflected: bool, _to: Any) -> bool:
        if type_ != "index" or reflected:
            return True
        only_on: str = item.info.get(ONLY_ON, dialect)
        return only_on == dialect

    return {"include_name": include_name, "include_object": include_object}
