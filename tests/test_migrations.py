"""Migrations: a fresh database upgrades to head, and the migrated schema is what the models say."""

import asyncio
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from backend.migrations import alembic_config, upgrade_to_head
from tests.conftest import POSTGRES_SERVER_URL, _pg_execute, database_url_for, require_postgres


def _schema_report(connection: Connection) -> dict[str, Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        # SQLite cannot reflect expression indexes; they are checked by name below instead.
        warnings.filterwarnings("ignore", "autogenerate skipping")
        warnings.filterwarnings("ignore", "Skipped unsupported reflection")
        diffs = compare_metadata(context, SQLModel.metadata)
    if connection.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
    else:
        query = "SELECT indexname FROM pg_indexes WHERE tablename = 'tasks'"
    return {
        "revision": context.get_current_revision(),
        "diffs": diffs,
        "task_indexes": set(connection.exec_driver_sql(query).scalars()),
    }


async def _inspect(url: str) -> dict[str, Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_schema_report)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    require_postgres()
    name = f"todo_migration_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_execute(POSTGRES_SERVER_URL, f'CREATE DATABASE "{name}"'))
    yield database_url_for(POSTGRES_SERVER_URL, name)
    asyncio.run(_pg_execute(POSTGRES_SERVER_URL, f'DROP DATABASE "{name}" WITH (FORCE)'))


def test_fresh_database_upgrades_to_head_and_matches_the_models(fresh_database_url: str) -> None:
    upgrade_to_head(fresh_database_url)
    report = asyncio.run(_inspect(fresh_database_url))
    head = ScriptDirectory.from_config(alembic_config(fresh_database_url)).get_current_head()
    assert report["revision"] == head
    assert report["diffs"] == []
    model_indexes = {index.name for index in SQLModel.metadata.tables["tasks"].indexes}
    assert model_indexes <= report["task_indexes"]


def test_downgrade_to_base_and_upgrade_again(fresh_database_url: str) -> None:
    config = alembic_config(fresh_database_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert asyncio.run(_inspect_tables(fresh_database_url)) == {"alembic_version"}
    command.upgrade(config, "head")
    assert asyncio.run(_inspect(fresh_database_url))["diffs"] == []


async def _inspect_tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def test_revisions_form_one_line() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused.db"))
    assert len(script.get_heads()) == 1
    for revision in script.walk_revisions():
        assert Path(revision.path).name.startswith(("2026", "2027", "2028"))
