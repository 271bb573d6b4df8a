"""Migrations: a fresh database upgrades to head, and the migrated schema is what the models say."""

import asyncio
import hashlib
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import column, inspect, table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from backend.migrations import alembic_config, compared, upgrade_to_head
from backend.models import ONLY_ON
from backend.schemas import TaskSort, TaskStatus
from backend.services.task_lists import list_statements, text_search


def _schema_report(connection: Connection) -> dict[str, Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, **compared(connection.dialect.name)}
    )
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
        "dialect": connection.dialect.name,
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


def test_fresh_database_upgrades_to_head_and_matches_the_models(fresh_database_url: str) -> None:
    upgrade_to_head(fresh_database_url)
    report = asyncio.run(_inspect(fresh_database_url))
    head = ScriptDirectory.from_config(alembic_config(fresh_database_url)).get_current_head()
    assert report["revision"] == head
    assert report["diffs"] == []
    model_indexes = {
        index.name
        for index in SQLModel.metadata.tables["tasks"].indexes
        if index.info.get(ONLY_ON, report["dialect"]) == report["dialect"]
    }
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


def test_sessions_keep_their_current_token_through_0004(fresh_database_url: str) -> None:
    """From 0003, where every used token had a row: the live token of each session keeps
    working, and the used and revoked rows are gone."""
    config = alembic_config(fresh_database_url)
    command.upgrade(config, "0003")
    user_id, family = "legacy-user", uuid.uuid4()
    live = "a refresh token issued before 0004"

    async def seed() -> None:
        engine = create_async_engine(fresh_database_url)
        now = datetime.now(UTC)
        moment = sa.DateTime(timezone=True)
        users = table(
            "users",
            *(column(name) for name in _USER_COLUMNS[:-2]),
            column("created_at", moment),
            column("updated_at", moment),
        )
        tokens = table(
            "refresh_tokens",
            column("id", sa.Uuid()),
            column("user_id"),
            column("family_id", sa.Uuid()),
            column("token_hash"),
            *(column(name, moment) for name in _TOKEN_MOMENTS),
        )
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    users.insert(),
                    [
                        dict(
                            zip(
                                _USER_COLUMNS,
                                (user_id, "local", "legacy@example.com", None, "x", 0, now, now),
                                strict=True,
                            )
                        )
                    ],
                )
                rows = [
                    (family, "used", now - timedelta(minutes=5), now, None),
                    (family, live, now, None, None),
                    (uuid.uuid4(), "revoked", now, None, now),
                ]
                await connection.execute(
                    tokens.insert(),
                    [
                        {
                            "id": uuid.uuid4(),
                            "user_id": user_id,
                            "family_id": family_id,
                            "token_hash": hashlib.sha256(raw.encode()).hexdigest(),
                            "created_at": created,
                            "family_expires_at": now + timedelta(days=30),
                            "expires_at": now + timedelta(days=7),
                            "used_at": used,
                            "revoked_at": revoked,
                        }
                        for family_id, raw, created, used, revoked in rows
                    ],
                )
        finally:
            await engine.dispose()

    async def remaining() -> list[str]:
        engine = create_async_engine(fresh_database_url)
        try:
            async with engine.connect() as connection:
                result = await connection.exec_driver_sql("SELECT token_hash FROM refresh_tokens")
                return [row[0] for row in result]
        finally:
            await engine.dispose()

    asyncio.run(seed())
    command.upgrade(config, "head")
    assert asyncio.run(remaining()) == [hashlib.sha256(live.encode()).hexdigest()]
    assert asyncio.run(_inspect(fresh_database_url))["diffs"] == []


_TOKEN_MOMENTS = ("created_at", "family_expires_at", "expires_at", "used_at", "revoked_at")
_USER_COLUMNS = (
    "id",
    "provider",
    "email",
    "name",
    "password_hash",
    "task_count",
    "created_at",
    "updated_at",
)


def test_upgrade_folds_the_search_text_of_stored_tasks(fresh_database_url: str) -> None:
    config = alembic_config(fresh_database_url)
    command.upgrade(config, "0002")
    asyncio.run(_store_tasks_of_0002(fresh_database_url))
    command.upgrade(config, "head")
    assert asyncio.run(_folded_texts(fresh_database_url)) == [
        ("strasse 5", ODYSSEUS.casefold()),
        ("x", None),
    ]


ODYSSEUS = "Ὀδυσσεύς ΣΑΣ"  # final sigma folds to sigma


_TASKS_0002 = sa.table(
    "tasks",
    *(sa.column(name, sa.String()) for name in ("user_id", "title", "description")),
    sa.column("id", sa.Uuid()),
    sa.column("completed", sa.Boolean()),
    sa.column("priority", sa.Integer()),
    *(sa.column(name, sa.DateTime(timezone=True)) for name in ("created_at", "updated_at")),
)
_USERS_0002 = sa.table(
    "users",
    *(sa.column(name, sa.String()) for name in ("id", "provider", "email")),
    sa.column("task_count", sa.Integer()),
    *(sa.column(name, sa.DateTime(timezone=True)) for name in ("created_at", "updated_at")),
)


async def _store_tasks_of_0002(url: str) -> None:
    now = datetime.now(UTC)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.insert(_USERS_0002),
                [{"id": "u1", "provider": "local", "email": "a@example.com", "task_count": 2,
                  "created_at": now, "updated_at": now}],
            )  # fmt: skip
            await connection.execute(
                sa.insert(_TASKS_0002),
                [
                    {"id": uuid.uuid4(), "user_id": "u1", "title": title, "description": text,
                     "completed": False, "priority": 2, "created_at": now, "updated_at": now}
                    for title, text in (("STRASSE 5", ODYSSEUS), ("X", None))
                ],
            )  # fmt: skip
    finally:
        await engine.dispose()


async def _folded_texts(url: str) -> list[tuple[str, str | None]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                sa.text("SELECT title_folded, description_folded FROM tasks ORDER BY title_folded")
            )
            return [(row[0], row[1]) for row in result]
    finally:
        await engine.dispose()


def test_upgrading_to_positions_orders_stored_tasks_newest_first(fresh_database_url: str) -> None:
    """From 0008 with tasks of two users: every task gets no tags and a position, each user's
    newest first, keys of the shape a rebalance writes."""
    config = alembic_config(fresh_database_url)
    command.upgrade(config, "0008_idempotency_keys")
    asyncio.run(_store_tasks_of_0008(fresh_database_url))
    command.upgrade(config, "head")
    rows = asyncio.run(_positions(fresh_database_url))
    for owner in ("u1", "u2"):
        mine = [row for row in rows if row[0] == owner]
        by_position = [title for _, title, _, _ in sorted(mine, key=lambda row: row[2])]
        assert by_position == [f"{owner} task {n}" for n in (2, 1, 0)]
        assert all(len(position) == 5 and position[0] == "d" for _, _, position, _ in mine)
        assert all(tags == "[]" for *_, tags in mine)
    assert asyncio.run(_inspect(fresh_database_url))["diffs"] == []


_TASKS_0008 = sa.table(
    "tasks",
    *(sa.column(column.name, column.type) for column in _TASKS_0002.columns),
    sa.column("title_folded", sa.String()),
)


async def _store_tasks_of_two_users(
    url: str, tasks: sa.TableClause, rows: list[dict[str, Any]]
) -> None:
    """Users u1 and u2, as every revision since 0002 holds them, and these tasks of theirs."""
    now = datetime.now(UTC)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.insert(_USERS_0002),
                [
                    {"id": owner, "provider": "local", "email": f"{owner}@example.com",
                     "task_count": 3, "created_at": now, "updated_at": now}
                    for owner in ("u1", "u2")
                ],
            )  # fmt: skip
            await connection.execute(sa.insert(tasks), rows)
    finally:
        await engine.dispose()


async def _store_tasks_of_0008(url: str) -> None:
    now = datetime.now(UTC)
    await _store_tasks_of_two_users(
        url,
        _TASKS_0008,
        [
            {"id": uuid.uuid4(), "user_id": owner, "title": f"{owner} task {n}",
             "title_folded": f"{owner} task {n}", "description": None,
             "completed": False, "priority": 2,
             "created_at": now + timedelta(seconds=n), "updated_at": now}
            for owner in ("u1", "u2")
            for n in range(3)
        ],
    )  # fmt: skip


async def _positions(url: str) -> list[tuple[str, str, str, str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                sa.text("SELECT user_id, title, position, tags FROM tasks")
            )
            return [(row[0], row[1], row[2], row[3]) for row in result]
    finally:
        await engine.dispose()


def test_upgrading_to_completed_counts_counts_live_completed_tasks(
    fresh_database_url: str,
) -> None:
    """From 0010 with tasks of two users (completed or not, live or in the trash): each user's
    `completed_count` is its live completed tasks; the triggers then keep it."""
    config = alembic_config(fresh_database_url)
    command.upgrade(config, "0010_organizing")
    asyncio.run(_store_completed_tasks_of_0010(fresh_database_url))
    command.upgrade(config, "0011_completed_count")
    assert asyncio.run(_completed_counts(fresh_database_url)) == {"u1": 2, "u2": 0}
    asyncio.run(_run(fresh_database_url, "UPDATE tasks SET completed = NOT completed"))
    assert asyncio.run(_completed_counts(fresh_database_url)) == {"u1": 1, "u2": 1}
    asyncio.run(_run(fresh_database_url, "DELETE FROM tasks WHERE user_id = 'u1'"))
    assert asyncio.run(_completed_counts(fresh_database_url)) == {"u1": 0, "u2": 1}
    command.downgrade(config, "0010_organizing")
    command.upgrade(config, "head")
    assert asyncio.run(_completed_counts(fresh_database_url)) == {"u1": 0, "u2": 1}


_TASKS_0010 = sa.table(
    "tasks",
    *(sa.column(column.name, column.type) for column in _TASKS_0008.columns),
    sa.column("description_folded", sa.String()),
    sa.column("position", sa.String()),
    sa.column("deleted_at", sa.DateTime(timezone=True)),
)
_STORED_0010 = [
    ("u1", "Call the PLUMBER", None, None),
    ("u1", "Sink", "a plumber, tomorrow", None),
    ("u1", "Straße", "nothing", None),
    ("u1", "plumber, trashed", None, datetime(2026, 12, 1, tzinfo=UTC)),
    ("u2", "plumber of another", None, None),
]


async def _store_tasks_of_0010(url: str) -> None:
    now = datetime.now(UTC)
    await _store_tasks_of_two_users(
        url,
        _TASKS_0010,
        [
            {"id": uuid.uuid4(), "user_id": owner, "title": title, "description": text,
             "title_folded": title.casefold(), "description_folded": text and text.casefold(),
             "completed": False, "priority": 2, "created_at": now, "updated_at": now,
             "position": f"a{n}", "deleted_at": deleted}
            for n, (owner, title, text, deleted) in enumerate(_STORED_0010)
        ],
    )  # fmt: skip


async def _found(url: str, q: str) -> int:
    """How many of u1's live tasks the list's search finds for `q`."""
    engine = create_async_engine(url)
    try:
        search, params = text_search(q, engine.dialect.name)
        count, _ = list_statements(
            TaskStatus.all, search, False, False, False, None, 0, TaskSort.created_at_desc
        )
        assert count is not None  # a search is counted
        async with engine.connect() as connection:
            result = await connection.execute(count, {"owner_id": "u1", **params})
            total: int = result.scalar_one()
            return total
    finally:
        await engine.dispose()


def test_tasks_stored_before_0012_are_found_through_the_search_index(
    fresh_database_url: str,
) -> None:
    """From 0010 with tasks: the index is filled (on SQLite, search reads nothing else for a
    query of three characters or more), and downgrading and upgrading again keeps it so."""
    config = alembic_config(fresh_database_url)
    command.upgrade(config, "0010_organizing")
    asyncio.run(_store_tasks_of_0010(fresh_database_url))
    command.upgrade(config, "head")
    searches = {"plumber": 2, "PLUMB": 2, "pl": 2, "strasse": 1, "ss": 1, "trashed": 0}
    assert {q: asyncio.run(_found(fresh_database_url, q)) for q in searches} == searches
    assert asyncio.run(_inspect(fresh_database_url))["diffs"] == []

    command.downgrade(config, "0010_organizing")
    indexes = asyncio.run(_inspect(fresh_database_url))["task_indexes"]
    assert not {"ix_tasks_user_title_trgm", "ix_tasks_user_description_trgm"} & indexes
    assert "tasks_search" not in asyncio.run(_inspect_tables(fresh_database_url))
    command.upgrade(config, "head")
    assert {q: asyncio.run(_found(fresh_database_url, q)) for q in searches} == searches


async def _store_completed_tasks_of_0010(url: str) -> None:
    """u1: two live completed tasks, one live pending, one completed in the trash; u2: one
    pending."""
    now = datetime.now(UTC)
    tasks = [("u1", True, None), ("u1", True, None), ("u1", False, None), ("u1", True, now)]
    tasks.append(("u2", False, None))
    await _store_tasks_of_two_users(
        url,
        _TASKS_0010,
        [
            {"id": uuid.uuid4(), "user_id": owner, "title": "t", "title_folded": "t",
             "description": None, "description_folded": None, "completed": completed,
             "priority": 2, "created_at": now, "updated_at": now, "position": f"d000{n}",
             "deleted_at": deleted_at}
            for n, (owner, completed, deleted_at) in enumerate(tasks)
        ],
    )  # fmt: skip


async def _run(url: str, statement: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def _completed_counts(url: str) -> dict[str, int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(sa.text("SELECT id, completed_count FROM users"))
            return {row[0]: row[1] for row in result}
    finally:
        await engine.dispose()
